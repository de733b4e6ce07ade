package android.media;

public class AudioRecord {
  public static final int STATE_INITIALIZED = 1;
  public static final int RECORDSTATE_RECORDING = 3;

  public AudioRecord(int audioSource, int sampleRateInHz, int channelConfig, int audioFormat,
      int bufferSizeInBytes) {}

  public static int getMinBufferSize(int sampleRateInHz, int channelConfig, int audioFormat) {
    throw new UnsupportedOperationException("stub");
  }

  public int getState() {
    throw new UnsupportedOperationException("stub");
  }

  public int getRecordingState() {
    throw new UnsupportedOperationException("stub");
  }

  public void startRecording() {}

  public void stop() {}

  public void release() {}

  public int read(short[] audioData, int offsetInShorts, int sizeInShorts) {
    throw new UnsupportedOperationException("stub");
  }
}
