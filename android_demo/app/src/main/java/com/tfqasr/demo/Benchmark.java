package com.tfqasr.demo;

import com.tfqasr.TfqException;
import com.tfqasr.TfqRecognizer;
import com.tfqasr.WavReader;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Locale;

/**
 * The app's benchmark: a recording streamed in fixed chunks (160 ms, what the microphone path
 * hands over) through a {@link StreamingSession}, timed by the core (RTF = compute / audio) and
 * by the wall clock around the Java calls (JNI and copies included).
 *
 * <p>{@link #main} runs it on a desktop JVM over the host build of libtfq_jni.so (property
 * {@code tfq.jni.library}), which is how tests/test_android_demo.py checks this code path.
 */
public final class Benchmark {
  /** Audio handed to the recognizer per call, as the microphone path does. */
  public static final int CHUNK_MS = 160;

  /** Called after every chunk with the partial text (on the benchmark's thread). */
  public interface Listener {
    void onUpdate(StreamingSession.Update update);
  }

  /** The final text and the timings of one run. */
  public static final class Result {
    public final String text;
    public final double audioSeconds;
    public final double computeSeconds;
    public final double wallSeconds;
    public final long steps;
    public final int chunks;

    Result(StreamingSession.Update last, double wallSeconds, int chunks) {
      this.text = last.text;
      this.audioSeconds = last.audioSeconds;
      this.computeSeconds = last.computeSeconds;
      this.steps = last.steps;
      this.wallSeconds = wallSeconds;
      this.chunks = chunks;
    }

    /** The core's compute time over the audio's duration. */
    public double realTimeFactor() {
      return audioSeconds > 0 ? computeSeconds / audioSeconds : 0.0;
    }

    /** Wall-clock time of the whole run over the audio's duration. */
    public double wallRealTimeFactor() {
      return audioSeconds > 0 ? wallSeconds / audioSeconds : 0.0;
    }

    /** One JSON line, the fields of tools/android_bench.sh's table. */
    public String toJson() {
      return String.format(Locale.ROOT,
          "{\"text\": %s, \"rtf\": %.5f, \"wall_rtf\": %.5f, \"seconds\": %.3f, \"steps\": %d, "
              + "\"chunks\": %d}",
          quote(text), realTimeFactor(), wallRealTimeFactor(), audioSeconds, steps, chunks);
    }
  }

  private Benchmark() {}

  /**
   * Streams {@code pcm16} (at the recognizer's sample rate) in chunks of {@code chunkMs}.
   *
   * @param listener receives every partial update, or null
   */
  public static Result run(TfqRecognizer recognizer, short[] pcm16, int chunkMs, Listener listener)
      throws TfqException {
    if (chunkMs < 1) {
      throw new IllegalArgumentException("chunkMs " + chunkMs + ": at least 1 expected");
    }
    int chunk = Math.max(1, recognizer.sampleRate() * chunkMs / 1000);
    long start = System.nanoTime();
    int chunks = 0;
    try (StreamingSession session = new StreamingSession(recognizer)) {
      for (int off = 0; off < pcm16.length; off += chunk) {
        StreamingSession.Update u = session.accept(pcm16, off, Math.min(chunk, pcm16.length - off));
        chunks++;
        if (listener != null) {
          listener.onUpdate(u);
        }
      }
      StreamingSession.Update last = session.finish();
      double wall = (System.nanoTime() - start) / 1e9;
      if (listener != null) {
        listener.onUpdate(last);
      }
      return new Result(last, wall, chunks);
    }
  }

  /**
   * {@code java -Dtfq.jni.library=libtfq_jni.so -cp CLASSES com.tfqasr.demo.Benchmark
   * [--litert libLiteRt.so] [--threads N] [--chunk-ms N] MODEL.tflite AUDIO.wav}: one JSON line.
   */
  public static void main(String[] args) throws IOException, TfqException {
    String litert = null;
    int threads = 1;
    int chunkMs = CHUNK_MS;
    int i = 0;
    for (; i < args.length && args[i].startsWith("--"); i += 2) {
      if (i + 1 >= args.length) {
        usage(args[i] + " needs a value");
      }
      switch (args[i]) {
        case "--litert":
          litert = args[i + 1];
          break;
        case "--threads":
          threads = parsePositive(args[i], args[i + 1]);
          break;
        case "--chunk-ms":
          chunkMs = parsePositive(args[i], args[i + 1]);
          break;
        default:
          usage("unknown option " + args[i]);
      }
    }
    if (args.length - i != 2) {
      usage("expected MODEL.tflite AUDIO.wav");
    }
    WavReader.Audio audio;
    try (InputStream in = new FileInputStream(args[i + 1])) {
      audio = WavReader.read(in, args[i + 1]);
    }
    try (TfqRecognizer r = TfqRecognizer.open(args[i], litert, threads)) {
      if (audio.sampleRate != r.sampleRate()) {
        throw new IOException(args[i + 1] + ": " + audio.sampleRate + " Hz, the model expects "
            + r.sampleRate() + " Hz");
      }
      System.out.println(run(r, audio.samples, chunkMs, null).toJson());
    }
  }

  private static int parsePositive(String option, String value) {
    try {
      int v = Integer.parseInt(value);
      if (v >= 1) {
        return v;
      }
    } catch (NumberFormatException e) {
      // reported below with the option's name
    }
    usage(option + " " + value + ": a positive integer expected");
    return 0;
  }

  private static void usage(String why) {
    System.err.println("Benchmark: " + why + "\nusage: Benchmark [--litert libLiteRt.so] "
        + "[--threads N] [--chunk-ms N] MODEL.tflite AUDIO.wav");
    System.exit(2);
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (int k = 0; k < s.length(); k++) {
      char c = s.charAt(k);
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }
}
