package com.tfqasr.demo;

import android.Manifest;
import android.app.Activity;
import android.content.pm.PackageManager;
import android.media.AudioFormat;
import android.media.AudioRecord;
import android.media.MediaRecorder;
import android.os.Bundle;
import android.os.Handler;
import android.os.Looper;
import android.util.Log;
import android.widget.Button;
import android.widget.TextView;
import com.tfqasr.TfqException;
import com.tfqasr.TfqRecognizer;
import com.tfqasr.WavReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;

/**
 * Records 16 kHz mono PCM with AudioRecord and streams it through the bundled 2-bit
 * conformer-ctc-xs (assets written by tools/android_assets.py): partial text while speaking, the
 * final text on Stop, model size and live RTF; "Benchmark" streams the bundled utterance.
 *
 * <p>Threads: the UI thread only touches views; every recognizer call (open, chunks, finish,
 * benchmark) runs in order on one engine thread; a recorder thread reads the microphone in
 * 160 ms chunks and queues them on the engine thread.  If the phone were slower than real time
 * (RTF above 1) chunks would queue up and the text lag behind the speech.
 */
public final class MainActivity extends Activity {
  static final String MODEL_ASSET = "conformer-ctc-xs-w2-stream.tflite";
  static final String BENCH_WAV_ASSET = "bench.wav";
  static final String BENCH_TEXT_ASSET = "bench.txt";
  private static final String TAG = "tfq-asr";
  /** LiteRT CPU threads: 1, the setting of the RTF figures in converters/README.md. */
  private static final int NUM_THREADS = 1;
  private static final int REQUEST_RECORD_AUDIO = 1;

  private final Handler ui = new Handler(Looper.getMainLooper());
  private final ExecutorService engine = Executors.newSingleThreadExecutor();

  // Engine thread only.
  private TfqRecognizer recognizer;
  private StreamingSession session;

  // Set on the engine thread once the model is open, read by the UI thread.
  private volatile int sampleRate;
  private volatile boolean recording;
  private Thread recorder;

  private TextView statusView;
  private TextView modelView;
  private TextView partialView;
  private TextView finalView;
  private TextView rtfView;
  private TextView benchView;
  private Button recordButton;
  private Button benchButton;

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    statusView = findViewById(R.id.status);
    modelView = findViewById(R.id.model);
    partialView = findViewById(R.id.partial);
    finalView = findViewById(R.id.final_text);
    rtfView = findViewById(R.id.rtf);
    benchView = findViewById(R.id.bench);
    recordButton = findViewById(R.id.record);
    benchButton = findViewById(R.id.benchmark);
    recordButton.setOnClickListener(v -> toggleRecording());
    benchButton.setOnClickListener(v -> runBenchmark());
    setButtonsEnabled(false);
    statusView.setText(R.string.status_loading);
    onEngine(this::openModel);
  }

  @Override
  protected void onStop() {
    super.onStop();
    // Apps in the background get silence from the microphone: end the utterance instead.
    if (recording) {
      stopRecording();
    }
  }

  @Override
  protected void onDestroy() {
    recording = false;
    Thread r = recorder;
    if (r != null) {
      try {
        r.join(1000); // it queues the last chunk and the finish before ending
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    onEngine(() -> {
      if (session != null) {
        session.close();
        session = null;
      }
      if (recognizer != null) {
        recognizer.close();
        recognizer = null;
      }
    });
    engine.shutdown();
    super.onDestroy();
  }

  // ---- model --------------------------------------------------------------------------------

  /** Engine thread: the asset to a file (LiteRT maps a path), LiteRT, then the recognizer. */
  private void openModel() {
    try {
      File model = copyAssetToFile(MODEL_ASSET);
      loadLiteRt();
      long start = System.nanoTime();
      recognizer = TfqRecognizer.open(model.getPath(), null, NUM_THREADS);
      double openSeconds = (System.nanoTime() - start) / 1e9;
      int rate = recognizer.sampleRate();
      int chunkFrames = recognizer.chunkFrames();
      long bytes = model.length();
      sampleRate = rate;
      ui.post(() -> {
        modelView.setText(getString(R.string.model_info, MODEL_ASSET, bytes, bytes / 1e6,
            chunkFrames * 10));
        statusView.setText(getString(R.string.status_ready, NUM_THREADS, rate, openSeconds));
        setButtonsEnabled(true);
      });
    } catch (IOException | TfqException | LinkageError e) {
      // LinkageError: libtfq_jni.so missing from the APK or built for another ABI.
      fail("opening " + MODEL_ASSET, e);
    }
  }

  /**
   * Loads the libLiteRt.so of the LiteRT AAR by its library name first, so that the core's
   * dlopen("libLiteRt.so") finds it loaded; if this fails the core's own message says why.
   */
  private static void loadLiteRt() {
    try {
      System.loadLibrary("LiteRt");
    } catch (UnsatisfiedLinkError e) {
      Log.w(TAG, "System.loadLibrary(\"LiteRt\"): " + e.getMessage());
    }
  }

  /**
   * Copies an asset to the app's files dir, again only after the app was installed or updated
   * (a new APK may bring a new model); written to a temporary file, then renamed.
   */
  private File copyAssetToFile(String name) throws IOException {
    File out = new File(getFilesDir(), name);
    long installed;
    try {
      installed = getPackageManager().getPackageInfo(getPackageName(), 0).lastUpdateTime;
    } catch (PackageManager.NameNotFoundException e) {
      installed = Long.MAX_VALUE; // cannot tell: copy
    }
    if (out.isFile() && out.length() > 0 && out.lastModified() >= installed) {
      return out;
    }
    File tmp = new File(getFilesDir(), name + ".tmp");
    try (InputStream in = getAssets().open(name); OutputStream os = new FileOutputStream(tmp)) {
      byte[] buf = new byte[1 << 16];
      int n;
      while ((n = in.read(buf)) > 0) {
        os.write(buf, 0, n);
      }
    } catch (IOException e) {
      tmp.delete();
      throw new IOException("asset " + name + ": " + e.getMessage()
          + " (assets are written by tools/android_assets.py)", e);
    }
    if (!tmp.renameTo(out)) {
      tmp.delete();
      throw new IOException("cannot rename " + tmp + " to " + out);
    }
    return out;
  }

  // ---- microphone ---------------------------------------------------------------------------

  private void toggleRecording() {
    if (recording) {
      stopRecording();
    } else if (checkSelfPermission(Manifest.permission.RECORD_AUDIO)
        != PackageManager.PERMISSION_GRANTED) {
      requestPermissions(new String[] {Manifest.permission.RECORD_AUDIO}, REQUEST_RECORD_AUDIO);
    } else {
      startRecording();
    }
  }

  @Override
  public void onRequestPermissionsResult(int requestCode, String[] permissions,
      int[] grantResults) {
    super.onRequestPermissionsResult(requestCode, permissions, grantResults);
    if (requestCode != REQUEST_RECORD_AUDIO) {
      return;
    }
    if (grantResults.length > 0 && grantResults[0] == PackageManager.PERMISSION_GRANTED) {
      startRecording();
    } else {
      statusView.setText(R.string.status_permission_denied);
    }
  }

  private void startRecording() {
    int rate = sampleRate;
    int chunk = rate * Benchmark.CHUNK_MS / 1000;
    int minBytes = AudioRecord.getMinBufferSize(rate, AudioFormat.CHANNEL_IN_MONO,
        AudioFormat.ENCODING_PCM_16BIT);
    if (minBytes <= 0) {
      statusView.setText(getString(R.string.status_error,
          "AudioRecord does not support " + rate + " Hz mono 16-bit on this device"));
      return;
    }
    AudioRecord record;
    try {
      // Room for four chunks, so a slow read does not drop audio.
      record = new AudioRecord(MediaRecorder.AudioSource.VOICE_RECOGNITION, rate,
          AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_16BIT,
          Math.max(minBytes, 4 * 2 * chunk));
    } catch (IllegalArgumentException | SecurityException e) {
      statusView.setText(getString(R.string.status_error, "AudioRecord: " + e.getMessage()));
      return;
    }
    if (record.getState() != AudioRecord.STATE_INITIALIZED) {
      record.release();
      statusView.setText(getString(R.string.status_error,
          "AudioRecord could not open the microphone"));
      return;
    }
    recording = true;
    recordButton.setText(R.string.stop);
    benchButton.setEnabled(false);
    partialView.setText("");
    finalView.setText("");
    rtfView.setText("");
    statusView.setText(R.string.status_recording);
    onEngine(() -> {
      try {
        session = new StreamingSession(recognizer);
      } catch (TfqException e) {
        fail("new stream", e);
      }
    });
    recorder = new Thread(() -> recordLoop(record, chunk), "tfq-recorder");
    recorder.start();
  }

  private void stopRecording() {
    recording = false;
    recordButton.setText(R.string.record);
    // Until the recorder thread has queued its last chunk and the finish (recordingEnded), a
    // new recording would interleave with them on the engine thread.
    recordButton.setEnabled(false);
    statusView.setText(R.string.status_finishing);
  }

  /** Recorder thread: 160 ms chunks to the engine thread until Stop, then the finish. */
  private void recordLoop(AudioRecord record, int chunk) {
    try {
      record.startRecording();
      while (recording) {
        short[] buf = new short[chunk];
        int n = 0;
        while (n < chunk && recording) {
          int got = record.read(buf, n, chunk - n);
          if (got < 0) {
            recording = false;
            fail("microphone", new IOException("AudioRecord.read returned " + got));
            break;
          }
          n += got;
        }
        if (n > 0) {
          int length = n;
          onEngine(() -> feed(buf, length));
        }
      }
    } catch (IllegalStateException e) {
      recording = false;
      fail("microphone", e);
    } finally {
      if (record.getRecordingState() == AudioRecord.RECORDSTATE_RECORDING) {
        record.stop();
      }
      record.release();
    }
    onEngine(this::finishSession);
  }

  /** Engine thread: one chunk; the partial text and live RTF to the screen. */
  private void feed(short[] pcm16, int length) {
    if (session == null) {
      return;
    }
    try {
      StreamingSession.Update u = session.accept(pcm16, 0, length);
      ui.post(() -> {
        partialView.setText(u.text);
        rtfView.setText(rtfLine(u));
      });
    } catch (TfqException e) {
      session.close();
      session = null;
      fail("streaming", e);
    }
  }

  /** Engine thread: the last padded chunk and the final text. */
  private void finishSession() {
    if (session == null) {
      ui.post(this::recordingEnded);
      return;
    }
    try {
      StreamingSession.Update u = session.finish();
      ui.post(() -> {
        partialView.setText(u.text);
        finalView.setText(u.text);
        rtfView.setText(rtfLine(u));
        statusView.setText(R.string.status_done);
      });
    } catch (TfqException e) {
      fail("finishing", e);
    } finally {
      session.close();
      session = null;
      ui.post(this::recordingEnded);
    }
  }

  private void recordingEnded() {
    recording = false;
    recordButton.setText(R.string.record);
    setButtonsEnabled(recognizerReady());
  }

  private String rtfLine(StreamingSession.Update u) {
    return getString(R.string.live_rtf, u.realTimeFactor(), u.audioSeconds,
        u.computeSeconds * 1000, u.steps);
  }

  // ---- benchmark ----------------------------------------------------------------------------

  private void runBenchmark() {
    setButtonsEnabled(false);
    benchView.setText("");
    partialView.setText("");
    finalView.setText("");
    statusView.setText(R.string.status_benchmark);
    onEngine(() -> {
      try {
        WavReader.Audio audio;
        try (InputStream in = getAssets().open(BENCH_WAV_ASSET)) {
          audio = WavReader.read(in, BENCH_WAV_ASSET);
        }
        String reference = readAsset(BENCH_TEXT_ASSET).trim();
        if (audio.sampleRate != recognizer.sampleRate()) {
          throw new IOException(BENCH_WAV_ASSET + ": " + audio.sampleRate
              + " Hz, the model expects " + recognizer.sampleRate() + " Hz");
        }
        Benchmark.Result r = Benchmark.run(recognizer, audio.samples, Benchmark.CHUNK_MS,
            u -> ui.post(() -> partialView.setText(u.text)));
        Log.i(TAG, "benchmark " + r.toJson());
        ui.post(() -> {
          finalView.setText(r.text);
          benchView.setText(getString(R.string.bench_result, BENCH_WAV_ASSET, r.audioSeconds,
              Benchmark.CHUNK_MS, NUM_THREADS, r.realTimeFactor(), r.wallRealTimeFactor(),
              r.steps, reference));
          statusView.setText(R.string.status_done);
        });
      } catch (IOException | TfqException e) {
        fail("benchmark", e);
      } finally {
        ui.post(() -> setButtonsEnabled(recognizerReady()));
      }
    });
  }

  private String readAsset(String name) throws IOException {
    try (InputStream in = getAssets().open(name)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[4096];
      int n;
      while ((n = in.read(buf)) > 0) {
        out.write(buf, 0, n);
      }
      return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }
  }

  // ---- helpers ------------------------------------------------------------------------------

  private boolean recognizerReady() {
    return sampleRate > 0;
  }

  private void setButtonsEnabled(boolean enabled) {
    recordButton.setEnabled(enabled);
    benchButton.setEnabled(enabled);
  }

  /** Queues work on the engine thread; after onDestroy there is none to do. */
  private void onEngine(Runnable task) {
    try {
      engine.execute(task);
    } catch (RejectedExecutionException e) {
      Log.i(TAG, "engine stopped; dropped a task");
    }
  }

  /** Any thread: logs and shows one line naming what failed. */
  private void fail(String what, Throwable e) {
    String message = what + ": " + e.getMessage();
    Log.e(TAG, message, e);
    ui.post(() -> statusView.setText(getString(R.string.status_error, message)));
  }
}
