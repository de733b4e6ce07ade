package com.tfqasr;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Reads a mono 16-bit PCM WAV (what tools/android_assets.py writes for the app's benchmark
 * utterance and what tfq_transcribe reads).  Every chunk length is checked against the data.
 */
public final class WavReader {
  /** Samples and their rate. */
  public static final class Audio {
    public final short[] samples;
    public final int sampleRate;

    Audio(short[] samples, int sampleRate) {
      this.samples = samples;
      this.sampleRate = sampleRate;
    }

    public double seconds() {
      return samples.length / (double) sampleRate;
    }
  }

  private static final int MAX_BYTES = 1 << 30;

  private WavReader() {}

  /** @param name used in error messages (the file or asset name) */
  public static Audio read(InputStream in, String name) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(readAll(in, name)).order(ByteOrder.LITTLE_ENDIAN);
    if (b.remaining() < 12 || b.getInt(0) != 0x46464952 || b.getInt(8) != 0x45564157) {
      throw new IOException(name + ": not a WAV file (no RIFF/WAVE header)");
    }
    int channels = -1;
    int rate = -1;
    int format = -1;
    int bits = -1;
    int pos = 12;
    while (pos + 8 <= b.limit()) {
      int id = b.getInt(pos);
      long len = b.getInt(pos + 4) & 0xffffffffL;
      int body = pos + 8;
      if (len > b.limit() - body) {
        throw new IOException(name + ": truncated WAV: a chunk claims " + len + " bytes, "
            + (b.limit() - body) + " left");
      }
      if (id == 0x20746d66) { // "fmt "
        if (len < 16) {
          throw new IOException(name + ": WAV fmt chunk of " + len + " bytes (16 at least)");
        }
        format = b.getShort(body) & 0xffff;
        channels = b.getShort(body + 2) & 0xffff;
        rate = b.getInt(body + 4);
        bits = b.getShort(body + 14) & 0xffff;
      } else if (id == 0x61746164) { // "data"
        if (format < 0) {
          throw new IOException(name + ": WAV data chunk before its fmt chunk");
        }
        if (format != 1 || bits != 16 || channels != 1) {
          throw new IOException(name + ": WAV format " + format + ", " + bits + " bits, "
              + channels + " channels: mono 16-bit PCM expected");
        }
        short[] s = new short[(int) (len / 2)];
        for (int i = 0; i < s.length; i++) {
          s[i] = b.getShort(body + 2 * i);
        }
        return new Audio(s, rate);
      }
      pos = (int) Math.min(Integer.MAX_VALUE, body + len + (len & 1));
    }
    throw new IOException(name + ": WAV file without a data chunk");
  }

  private static byte[] readAll(InputStream in, String name) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    byte[] buf = new byte[1 << 16];
    int n;
    while ((n = in.read(buf)) > 0) {
      out.write(buf, 0, n);
      if (out.size() > MAX_BYTES) {
        throw new IOException(name + ": larger than " + MAX_BYTES + " bytes");
      }
    }
    return out.toByteArray();
  }
}
