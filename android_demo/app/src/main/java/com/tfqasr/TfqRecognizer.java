package com.tfqasr;

import java.io.File;
import java.util.ArrayList;
import java.util.List;

/**
 * A streaming recognizer over the native core (converters/stream, tfq/stream.h) through the JNI
 * bridge (converters/jni/tfq_jni.c, libtfq_jni.so).  One recognizer owns one compiled streaming
 * .tflite (tools/convert.py --streaming) with the packed TFQ_FULLY_CONNECTED op registered.
 *
 * <p>Its streams share the model's buffers, so every call on the recognizer and its streams is
 * serialised on the recognizer; open one recognizer per thread for parallel streams.  Closing
 * the recognizer closes its streams.
 *
 * <pre>
 *   try (TfqRecognizer r = TfqRecognizer.open("model.tflite", null, 1);
 *        TfqStream s = r.newStream()) {
 *     s.accept(pcm16, 0, n);        // any number of times, chunks of any length
 *     String text = s.finish();
 *   }
 * </pre>
 */
public final class TfqRecognizer implements AutoCloseable {
  /** Loaded once: System.loadLibrary("tfq_jni") unless tfq.jni.library names a file. */
  static {
    String path = System.getProperty("tfq.jni.library");
    if (path != null && !path.isEmpty()) {
      System.load(new File(path).getAbsolutePath());
    } else {
      System.loadLibrary("tfq_jni");
    }
  }

  private long handle;
  private final String modelPath;
  private final List<TfqStream> streams = new ArrayList<>();

  private TfqRecognizer(long handle, String modelPath) {
    this.handle = handle;
    this.modelPath = modelPath;
  }

  /**
   * Opens a streaming model.
   *
   * @param modelPath the .tflite file (a path: LiteRT maps it, an Android asset must be copied
   *     to a file first)
   * @param litertLibrary the libLiteRt.so to load, or null for "libLiteRt.so" on the default
   *     search path (on Android: the one the LiteRT Maven artifact puts in the APK)
   * @param numThreads LiteRT CPU threads, at least 1
   * @throws TfqException naming the file and the problem (missing, not a streaming model, ...)
   */
  public static TfqRecognizer open(String modelPath, String litertLibrary, int numThreads)
      throws TfqException {
    if (modelPath == null) {
      throw new IllegalArgumentException("modelPath is null");
    }
    if (numThreads < 1) {
      throw new IllegalArgumentException("numThreads " + numThreads + ": at least 1 expected");
    }
    long h = nativeOpen(modelPath, litertLibrary, numThreads);
    return new TfqRecognizer(h, modelPath);
  }

  public String modelPath() {
    return modelPath;
  }

  /** Sample rate the model's frontend expects (16000 for the bundled models). */
  public synchronized int sampleRate() {
    return nativeSampleRate(live());
  }

  /** 10 ms feature frames per model step (the chunk size the model was exported with). */
  public synchronized int chunkFrames() {
    return nativeChunkFrames(live());
  }

  /** A new utterance.  Close it (or the recognizer) when done. */
  public synchronized TfqStream newStream() throws TfqException {
    long s = nativeStreamCreate(live());
    TfqStream stream = new TfqStream(this, s);
    streams.add(stream);
    return stream;
  }

  /** Whole-utterance convenience: one stream, the samples in one accept, finish. */
  public String transcribe(short[] pcm16) throws TfqException {
    try (TfqStream s = newStream()) {
      s.accept(pcm16, 0, pcm16.length);
      return s.finish();
    }
  }

  @Override
  public synchronized void close() {
    if (handle == 0) {
      return;
    }
    for (TfqStream s : new ArrayList<>(streams)) {
      s.close();
    }
    nativeClose(handle);
    handle = 0;
  }

  synchronized void forget(TfqStream s) {
    streams.remove(s);
  }

  long live() {
    if (handle == 0) {
      throw new IllegalStateException("TfqRecognizer(" + modelPath + ") is closed");
    }
    return handle;
  }

  // Native side: converters/jni/tfq_jni.c.  Handles are the C pointers.
  private static native long nativeOpen(String model, String litert, int threads)
      throws TfqException;

  private static native void nativeClose(long recognizer);

  private static native int nativeSampleRate(long recognizer);

  private static native int nativeChunkFrames(long recognizer);

  private static native long nativeStreamCreate(long recognizer) throws TfqException;

  static native void nativeAcceptFloat(long stream, float[] samples, int offset, int length)
      throws TfqException;

  static native void nativeAcceptPcm16(long stream, short[] samples, int offset, int length)
      throws TfqException;

  static native byte[] nativePartial(long stream);

  static native byte[] nativeFinish(long stream) throws TfqException;

  static native double nativeComputeSeconds(long stream);

  static native double nativeAudioSeconds(long stream);

  static native long nativeSteps(long stream);

  static native void nativeStreamDestroy(long stream);
}
