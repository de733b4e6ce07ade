import com.tfqasr.TfqException;
import com.tfqasr.TfqRecognizer;
import com.tfqasr.TfqStream;
import com.tfqasr.WavReader;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Host check of the JNI bridge (tests/test_jni.py runs it): the com.tfqasr classes of the
 * Android app over libtfq_jni.so, on the JVM of this machine.  Prints facts as JSON lines;
 * the Python test holds the expectations (the Python recognizer's transcripts).
 *
 *   JniCheck transcribe LITERT MODEL SEED WAV...   one line per file: text, partials, rtf
 *   JniCheck errors LITERT MODEL WAV               one line per misuse: exception and message
 */
public final class JniCheck {
  private JniCheck() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 4) {
      System.err.println("usage: JniCheck transcribe|errors LITERT MODEL ...");
      System.exit(2);
    }
    if (args[0].equals("transcribe")) {
      transcribe(args[1], args[2], Long.parseLong(args[3]), args, 4);
    } else if (args[0].equals("errors")) {
      errors(args[1], args[2], args[3]);
    } else {
      System.err.println("unknown mode " + args[0]);
      System.exit(2);
    }
  }

  private static WavReader.Audio wav(String path) throws IOException {
    try (InputStream in = new FileInputStream(path)) {
      return WavReader.read(in, path);
    }
  }

  /** Streams each file in random chunks (0 to 2 s, seeded), alternating short and float input. */
  private static void transcribe(String litert, String model, long seed, String[] files, int from)
      throws Exception {
    Random rng = new Random(seed);
    try (TfqRecognizer r = TfqRecognizer.open(model, litert, 1)) {
      for (int f = from; f < files.length; f++) {
        WavReader.Audio a = wav(files[f]);
        List<String> partials = new ArrayList<>();
        boolean asFloat = f % 2 == 1;
        try (TfqStream s = r.newStream()) {
          int pos = 0;
          while (pos < a.samples.length) {
            int n = Math.min(a.samples.length - pos, rng.nextInt(32000 + 1));
            if (asFloat) {
              float[] x = new float[n + 3];  // offset 3: the range arguments are honoured
              for (int i = 0; i < n; i++) {
                x[i + 3] = a.samples[pos + i] / 32768.0f;
              }
              s.accept(x, 3, n);
            } else {
              s.accept(a.samples, pos, n);
            }
            pos += n;
            partials.add(s.partial());
          }
          String text = s.finish();
          System.out.println("{\"audio\": " + json(files[f]) + ", \"text\": " + json(text)
              + ", \"partials\": " + json(partials) + ", \"rtf\": " + s.realTimeFactor()
              + ", \"seconds\": " + s.audioSeconds() + ", \"steps\": " + s.steps()
              + ", \"sample_rate\": " + r.sampleRate() + ", \"chunk_frames\": "
              + r.chunkFrames() + "}");
        }
      }
    }
  }

  private interface Action {
    Object run() throws Exception;
  }

  private static void report(String name, Action a) {
    String result;
    try {
      Object v = a.run();
      result = "\"returned\": " + json(String.valueOf(v));
    } catch (Exception | Error e) {
      String status = e instanceof TfqException ? ", \"status\": " + ((TfqException) e).status()
          : "";
      result = "\"exception\": " + json(e.getClass().getName()) + ", \"message\": "
          + json(String.valueOf(e.getMessage())) + status;
    }
    System.out.println("{\"case\": " + json(name) + ", " + result + "}");
  }

  private static void errors(String litert, String model, String file) throws Exception {
    WavReader.Audio a = wav(file);
    report("missing model", () -> TfqRecognizer.open("/nonexistent/model.tflite", litert, 1));
    report("missing litert", () -> TfqRecognizer.open(model, "/nonexistent/libLiteRt.so", 1));
    report("zero threads", () -> TfqRecognizer.open(model, litert, 0));
    report("wav is not a wav", () -> WavReader.read(new FileInputStream(model), model));
    TfqRecognizer r = TfqRecognizer.open(model, litert, 1);
    TfqStream s = r.newStream();
    report("bad range", () -> {
      s.accept(a.samples, a.samples.length - 10, 11);
      return null;
    });
    report("nan sample", () -> {
      float[] x = new float[20000];
      x[19999] = Float.NaN;
      s.accept(x, 0, x.length);
      return null;
    });
    // The NaN chunk consumed nothing: the whole file still gives the file's transcript.
    report("after nan", () -> {
      s.accept(a.samples, 0, a.samples.length);
      return s.finish();
    });
    report("accept after finish", () -> {
      s.accept(a.samples, 0, 100);
      return null;
    });
    report("finish twice", s::finish);
    report("partial after finish", s::partial);
    report("recognizer still usable", () -> r.transcribe(a.samples));
    s.close();
    report("stream after close", s::partial);
    TfqStream open = r.newStream();
    r.close();
    report("stream after recognizer close", open::partial);
    report("recognizer after close", r::newStream);
    r.close();  // twice: a no-op
    report("empty accept and finish", () -> {
      try (TfqRecognizer r2 = TfqRecognizer.open(model, litert, 1);
          TfqStream s2 = r2.newStream()) {
        s2.accept(new short[0], 0, 0);
        return s2.finish();
      }
    });
  }

  private static String json(List<String> list) {
    StringBuilder b = new StringBuilder("[");
    for (int i = 0; i < list.size(); i++) {
      b.append(i > 0 ? ", " : "").append(json(list.get(i)));
    }
    return b.append(']').toString();
  }

  private static String json(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }
}
