package com.tfqasr.demo;

import com.tfqasr.TfqException;
import com.tfqasr.TfqRecognizer;
import com.tfqasr.TfqStream;

/**
 * One utterance as the app streams it, from the microphone or from the benchmark file: chunks
 * in, after each chunk the partial text and the timings the screen shows.  Plain Java (no
 * android.*), so the desktop JVM runs the same code (see {@link Benchmark#main}).
 *
 * <p>Not thread-safe: the app calls it from its one recognizer thread.
 */
public final class StreamingSession implements AutoCloseable {
  /** What the screen shows after a chunk (or after finish, with {@code last} set). */
  public static final class Update {
    public final String text;
    public final boolean last;
    /** Seconds of audio accepted so far. */
    public final double audioSeconds;
    /** Seconds the core spent on them (features and model steps). */
    public final double computeSeconds;
    public final long steps;

    Update(String text, boolean last, double audioSeconds, double computeSeconds, long steps) {
      this.text = text;
      this.last = last;
      this.audioSeconds = audioSeconds;
      this.computeSeconds = computeSeconds;
      this.steps = steps;
    }

    /** Compute time over audio time (0 before any audio); below 1 keeps up with real time. */
    public double realTimeFactor() {
      return audioSeconds > 0 ? computeSeconds / audioSeconds : 0.0;
    }
  }

  private final TfqStream stream;

  public StreamingSession(TfqRecognizer recognizer) throws TfqException {
    this.stream = recognizer.newStream();
  }

  /** Feeds {@code length} 16-bit samples (AudioRecord's ENCODING_PCM_16BIT) from {@code offset}. */
  public Update accept(short[] pcm16, int offset, int length) throws TfqException {
    stream.accept(pcm16, offset, length);
    return update(stream.partial(), false);
  }

  /** Runs the last, padded chunk: the final text.  The session is done afterwards. */
  public Update finish() throws TfqException {
    String text = stream.finish();
    return update(text, true);
  }

  @Override
  public void close() {
    stream.close();
  }

  private Update update(String text, boolean last) {
    return new Update(text, last, stream.audioSeconds(), stream.computeSeconds(), stream.steps());
  }
}
