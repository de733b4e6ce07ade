package com.tfqasr;

import java.nio.charset.StandardCharsets;

/**
 * One utterance streamed through a {@link TfqRecognizer}: accept audio in chunks of any length,
 * read the partial text at any time, finish once for the final text.
 *
 * <p>Errors: a NaN or infinite sample throws IllegalArgumentException and consumes nothing
 * (the stream stays usable); accept or finish after finish, or after a failed model step,
 * throws TfqException; any call after close throws IllegalStateException.
 */
public final class TfqStream implements AutoCloseable {
  private final TfqRecognizer recognizer;
  private long handle;

  TfqStream(TfqRecognizer recognizer, long handle) {
    this.recognizer = recognizer;
    this.handle = handle;
  }

  /** 16-bit PCM as AudioRecord delivers it (ENCODING_PCM_16BIT), scaled by 1/32768. */
  public void accept(short[] pcm16, int offset, int length) throws TfqException {
    checkRange(pcm16 == null ? -1 : pcm16.length, offset, length);
    synchronized (recognizer) {
      TfqRecognizer.nativeAcceptPcm16(live(), pcm16, offset, length);
    }
  }

  /** Float samples in [-1, 1] at the model's sample rate. */
  public void accept(float[] samples, int offset, int length) throws TfqException {
    checkRange(samples == null ? -1 : samples.length, offset, length);
    synchronized (recognizer) {
      TfqRecognizer.nativeAcceptFloat(live(), samples, offset, length);
    }
  }

  /** The text decoded so far (greedy CTC over the steps run so far). */
  public String partial() {
    synchronized (recognizer) {
      return utf8(TfqRecognizer.nativePartial(live()));
    }
  }

  /** Runs the last (padded) chunk and returns the final text; a second call throws. */
  public String finish() throws TfqException {
    synchronized (recognizer) {
      return utf8(TfqRecognizer.nativeFinish(live()));
    }
  }

  /** Wall-clock seconds spent in accept and finish (feature extraction and model steps). */
  public double computeSeconds() {
    synchronized (recognizer) {
      return TfqRecognizer.nativeComputeSeconds(live());
    }
  }

  /** Seconds of audio accepted so far. */
  public double audioSeconds() {
    synchronized (recognizer) {
      return TfqRecognizer.nativeAudioSeconds(live());
    }
  }

  /** computeSeconds / audioSeconds (0 before any audio): below 1 is faster than real time. */
  public double realTimeFactor() {
    synchronized (recognizer) {
      long h = live();
      double audio = TfqRecognizer.nativeAudioSeconds(h);
      return audio > 0 ? TfqRecognizer.nativeComputeSeconds(h) / audio : 0.0;
    }
  }

  /** Model steps run so far. */
  public long steps() {
    synchronized (recognizer) {
      return TfqRecognizer.nativeSteps(live());
    }
  }

  @Override
  public void close() {
    synchronized (recognizer) {
      if (handle == 0) {
        return;
      }
      TfqRecognizer.nativeStreamDestroy(handle);
      handle = 0;
      recognizer.forget(this);
    }
  }

  private long live() {
    if (handle == 0) {
      throw new IllegalStateException("TfqStream is closed");
    }
    recognizer.live();
    return handle;
  }

  private static void checkRange(int size, int offset, int length) {
    if (size < 0) {
      throw new IllegalArgumentException("samples is null");
    }
    if (offset < 0 || length < 0 || offset > size - length) {
      throw new IndexOutOfBoundsException(
          "offset " + offset + ", length " + length + " outside an array of " + size);
    }
  }

  private static String utf8(byte[] b) {
    return new String(b, StandardCharsets.UTF_8);
  }
}
