/*
 * tfq_transcribe [--litert PATH] [--threads N] [--chunk-samples N] MODEL.tflite AUDIO.wav...
 *
 * Streams each WAV file (16 kHz mono, 16-bit PCM or 32-bit float) through the C streaming core
 * in chunks of --chunk-samples (default 1600 = 100 ms) and prints one JSON line per file:
 *   {"audio": "a.wav", "text": "...", "rtf": 0.0123, "seconds": 2.5}
 * Exit status: 0 if every file was transcribed, 2 for usage errors and unusable WAV files
 * (the other files are still transcribed), 1 if the model cannot be opened or a run failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/stream.h"

#define EXIT_USAGE 2
#define MAX_WAV_BYTES ((size_t)1 << 31)

static const char USAGE[] =
    "usage: tfq_transcribe [--litert PATH] [--threads N] [--chunk-samples N] MODEL.tflite AUDIO.wav...\n";

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Reads a whole file (at most MAX_WAV_BYTES). */
static unsigned char *read_file(const char *path, size_t *size, char *err, size_t es) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, es, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      if (cap >= MAX_WAV_BYTES) {
        snprintf(err, es, "%s: larger than %zu bytes", path, MAX_WAV_BYTES);
        free(buf);
        buf = NULL;
        break;
      }
      unsigned char *b = realloc(buf, cap * 2);
      if (!b) { free(buf); buf = NULL; break; }
      buf = b;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) {
        snprintf(err, es, "%s: read error", path);
        free(buf);
        buf = NULL;
      }
      break;
    }
  }
  if (!buf && !err[0]) snprintf(err, es, "%s: out of memory", path);
  fclose(f);
  *size = n;
  return buf;
}

/* 16 kHz mono WAV (PCM 16-bit or IEEE float 32-bit, plain or WAVE_FORMAT_EXTENSIBLE) ->
 * float samples.  Every chunk length is checked against the file size. */
static float *read_wav(const char *path, int want_rate, size_t *count, char *err, size_t es) {
  size_t size = 0;
  err[0] = '\0';
  unsigned char *b = read_file(path, &size, err, es);
  if (!b) return NULL;
  float *out = NULL;
  if (size < 12 || memcmp(b, "RIFF", 4) != 0 || memcmp(b + 8, "WAVE", 4) != 0) {
    snprintf(err, es, "%s: not a WAV file (no RIFF/WAVE header)", path);
    goto done;
  }
  int have_fmt = 0, format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  const unsigned char *data = NULL;
  size_t data_bytes = 0, pos = 12;
  while (pos + 8 <= size) {
    uint32_t len = le32(b + pos + 4);
    const unsigned char *body = b + pos + 8;
    size_t avail = size - pos - 8;
    if (len > avail) {
      snprintf(err, es, "%s: truncated WAV: chunk '%.4s' claims %u bytes, %zu left", path,
               (const char *)(b + pos), len, avail);
      goto done;
    }
    if (memcmp(b + pos, "fmt ", 4) == 0) {
      if (len < 16) {
        snprintf(err, es, "%s: WAV fmt chunk of %u bytes (16 at least)", path, len);
        goto done;
      }
      format = le16(body);
      channels = le16(body + 2);
      rate = le32(body + 4);
      bits = le16(body + 14);
      if (format == 0xFFFE) {  /* WAVE_FORMAT_EXTENSIBLE: the subformat GUID starts with the tag */
        if (len < 40) {
          snprintf(err, es, "%s: WAV extensible fmt chunk of %u bytes (40 expected)", path, len);
          goto done;
        }
        format = le16(body + 24);
      }
      have_fmt = 1;
    } else if (memcmp(b + pos, "data", 4) == 0) {
      data = body;
      data_bytes = len;
      break;
    }
    pos += 8 + (size_t)len + (len & 1);
  }
  if (!have_fmt) {
    snprintf(err, es, "%s: WAV file without a fmt chunk before its data", path);
    goto done;
  }
  if (!data) {
    snprintf(err, es, "%s: WAV file without a data chunk", path);
    goto done;
  }
  int pcm16 = format == 1 && bits == 16, f32 = format == 3 && bits == 32;
  if (!pcm16 && !f32) {
    snprintf(err, es, "%s: WAV format %d with %d bits per sample: only 16-bit PCM or 32-bit "
             "float are read (convert with sox)", path, format, bits);
    goto done;
  }
  if (channels != 1 || rate != (uint32_t)want_rate) {
    snprintf(err, es, "%s: %d channels at %u Hz: mono %d Hz expected (e.g. sox IN -r %d -c 1 "
             "-b 16 OUT.wav)", path, channels, rate, want_rate, want_rate);
    goto done;
  }
  size_t width = pcm16 ? 2 : 4, n = data_bytes / width;
  out = malloc((n ? n : 1) * sizeof(float));
  if (!out) {
    snprintf(err, es, "%s: out of memory", path);
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const unsigned char *p = data + i * width;
    if (pcm16) {
      out[i] = (float)(int16_t)le16(p) / 32768.0f;
    } else {
      uint32_t u = le32(p);
      memcpy(&out[i], &u, sizeof u);
    }
  }
  *count = n;
done:
  free(b);
  return out;
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c == '\n') fputs("\\n", stdout);
    else if (c == '\t') fputs("\\t", stdout);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

int main(int argc, char **argv) {
  const char *litert = NULL;
  long threads = 1, chunk = 1600;
  int i = 1;
  for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
    const char *opt = argv[i];
    if (strcmp(opt, "--") == 0) { i++; break; }
    if (strcmp(opt, "--help") == 0) { fputs(USAGE, stdout); return 0; }
    if (i + 1 >= argc) {
      fprintf(stderr, "tfq_transcribe: %s needs a value\n%s", opt, USAGE);
      return EXIT_USAGE;
    }
    const char *val = argv[++i];
    if (strcmp(opt, "--litert") == 0) {
      litert = val;
    } else if (strcmp(opt, "--threads") == 0) {
      if (!parse_int(val, 1, 256, &threads)) {
        fprintf(stderr, "tfq_transcribe: --threads %s: an integer in 1..256 expected\n", val);
        return EXIT_USAGE;
      }
    } else if (strcmp(opt, "--chunk-samples") == 0) {
      if (!parse_int(val, 1, 1L << 30, &chunk)) {
        fprintf(stderr, "tfq_transcribe: --chunk-samples %s: a positive integer expected\n", val);
        return EXIT_USAGE;
      }
    } else {
      fprintf(stderr, "tfq_transcribe: unknown option %s\n%s", opt, USAGE);
      return EXIT_USAGE;
    }
  }
  if (argc - i < 2) {
    fputs(USAGE, stderr);
    return EXIT_USAGE;
  }
  const char *model = argv[i++];
  char err[1024];
  tfq_recognizer *r = NULL;
  int rc = tfq_recognizer_open(model, litert, (int)threads, &r, err, sizeof err);
  if (rc != TFQ_OK) {
    fprintf(stderr, "tfq_transcribe: %s\n", err);
    return 1;
  }
  int status = 0;
  for (; i < argc; i++) {
    const char *path = argv[i];
    size_t n = 0;
    float *audio = read_wav(path, tfq_recognizer_sample_rate(r), &n, err, sizeof err);
    if (!audio) {
      fprintf(stderr, "tfq_transcribe: %s\n", err);
      if (status == 0) status = EXIT_USAGE;
      continue;
    }
    tfq_stream *s = NULL;
    const char *text = NULL;
    if (tfq_stream_create(r, &s, err, sizeof err) != TFQ_OK) {
      fprintf(stderr, "tfq_transcribe: %s\n", err);
      free(audio);
      status = 1;
      break;
    }
    rc = TFQ_OK;
    for (size_t at = 0; at < n && rc == TFQ_OK; at += (size_t)chunk)
      rc = tfq_stream_accept(s, audio + at, n - at < (size_t)chunk ? n - at : (size_t)chunk);
    if (rc == TFQ_OK) rc = tfq_stream_finish(s, &text);
    if (rc != TFQ_OK) {
      fprintf(stderr, "tfq_transcribe: %s: %s\n", path, tfq_stream_error(s));
      status = status ? status : (rc == TFQ_STREAM_ERR_ARGUMENT ? EXIT_USAGE : 1);
    } else {
      double audio_s = tfq_stream_audio_seconds(s), compute = tfq_stream_compute_seconds(s);
      fputs("{\"audio\": ", stdout);
      print_json_string(path);
      fputs(", \"text\": ", stdout);
      print_json_string(text);
      printf(", \"rtf\": %.6f, \"seconds\": %.3f, \"steps\": %ld}\n",
             audio_s > 0 ? compute / audio_s : 0.0, audio_s, tfq_stream_steps(s));
      fflush(stdout);
    }
    tfq_stream_destroy(s);
    free(audio);
  }
  tfq_recognizer_close(r);
  return status;
}
