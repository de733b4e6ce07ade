/*
 * The streaming core: what tfq_asr.streaming.Recognizer does, in C, for the Android app (JNI),
 * tfq_transcribe and any other native runner.
 *
 * A recognizer is one streaming .tflite (tools/convert.py --streaming) compiled by LiteRT
 * (libLiteRt.so, dlopened: no link-time dependency) with TFQ_FULLY_CONNECTED registered.  Its
 * metadata (key "tfq_asr", JSON) gives the step model's chunk size, which input takes the
 * features, which output feeds which state input, the vocabulary and the log-mel recipe.
 * A stream is one utterance: incremental log-mel (any chunking of the audio gives the offline
 * frames), one model step per chunk_frames frames (state from the outputs back to the inputs),
 * greedy CTC (repeats collapsed, blanks dropped).  finish() pads the last partial chunk with
 * log(log_floor) frames, as the Python Recognizer does, so the transcripts are the same.
 *
 * Threads: a recognizer owns one compiled model and its tensor buffers; its streams must not
 * run (accept/finish) concurrently.  Open one recognizer per thread for parallel streams.
 * Status codes: TFQ_OK (0) or a negative TFQ_STREAM_ERR_* value.
 */
#ifndef TFQ_STREAM_H
#define TFQ_STREAM_H

#include <stddef.h>

#include "tfq/kernels.h"  /* TFQ_OK, TFQ_API (converters/core/include) */

#ifdef __cplusplus
extern "C" {
#endif

#define TFQ_STREAM_API TFQ_API
#define TFQ_STREAM_ERR_ARGUMENT -101  /* NULL pointer, NaN/Inf samples, bad parameter */
#define TFQ_STREAM_ERR_FILE -102      /* model file missing, unreadable, not a .tflite */
#define TFQ_STREAM_ERR_MODEL -103     /* not a streaming model, metadata or tensors wrong */
#define TFQ_STREAM_ERR_LITERT -104    /* libLiteRt.so missing, or a LiteRT call failed */
#define TFQ_STREAM_ERR_RUN -105       /* a model step failed (LiteRT or a TFQ op) */
#define TFQ_STREAM_ERR_STATE -106     /* accept/finish after finish, or after a failed step */
#define TFQ_STREAM_ERR_MEMORY -107

typedef struct tfq_recognizer tfq_recognizer;
typedef struct tfq_stream tfq_stream;

/* litert_library: path of libLiteRt.so to dlopen, or NULL for "libLiteRt.so" (default search
 * path).  Returns TFQ_OK (0) or an error status; on error *out is NULL and err (if non-NULL)
 * holds a one-line message naming the file and the problem. */
TFQ_STREAM_API int tfq_recognizer_open(const char *model_path, const char *litert_library,
                                       int num_threads, tfq_recognizer **out, char *err,
                                       size_t err_size);
TFQ_STREAM_API void tfq_recognizer_close(tfq_recognizer *r);
TFQ_STREAM_API int tfq_recognizer_chunk_frames(const tfq_recognizer *r); /* 10 ms frames per step */

TFQ_STREAM_API int tfq_stream_create(tfq_recognizer *r, tfq_stream **out, char *err,
                                     size_t err_size);
/* 16 kHz mono float samples, any length (also 0).  NaN/Inf: TFQ_STREAM_ERR_ARGUMENT, nothing
 * consumed, the stream stays usable. */
TFQ_STREAM_API int tfq_stream_accept(tfq_stream *s, const float *samples, size_t n);
TFQ_STREAM_API const char *tfq_stream_partial(tfq_stream *s);  /* valid until the next call on s */
/* Pads the last chunk with log(log_floor) frames like Python; *text valid until destroy. */
TFQ_STREAM_API int tfq_stream_finish(tfq_stream *s, const char **text);
TFQ_STREAM_API const char *tfq_stream_error(const tfq_stream *s);  /* last error, "" if none */
TFQ_STREAM_API double tfq_stream_compute_seconds(const tfq_stream *s); /* wall time in accept/finish */
TFQ_STREAM_API double tfq_stream_audio_seconds(const tfq_stream *s);
TFQ_STREAM_API void tfq_stream_destroy(tfq_stream *s);

/* ---- Additions ------------------------------------------------------------------------- */
TFQ_STREAM_API int tfq_recognizer_sample_rate(const tfq_recognizer *r);
TFQ_STREAM_API long tfq_stream_steps(const tfq_stream *s);  /* model steps run so far */

/* The log-mel frontend alone (tfq_asr.frontend.log_mel, incremental), for tests and tools.
 * Parameters as in the "frontend" object of the streaming metadata. */
typedef struct tfq_frontend_params {
  int sample_rate, n_mels, win, hop, n_fft;
  double fmin, fmax, log_floor;
} tfq_frontend_params;
typedef struct tfq_frontend tfq_frontend;

TFQ_STREAM_API void tfq_frontend_default_params(tfq_frontend_params *p);  /* 16 kHz, 80, 400, 160, 400, 20, 7600, 1e-6 */
/* NULL on bad parameters (err says which) or no memory. */
TFQ_STREAM_API tfq_frontend *tfq_frontend_create(const tfq_frontend_params *p, char *err,
                                                 size_t err_size);
TFQ_STREAM_API void tfq_frontend_destroy(tfq_frontend *f);
TFQ_STREAM_API void tfq_frontend_reset(tfq_frontend *f);
/* Frames that accepting n more samples completes. */
TFQ_STREAM_API size_t tfq_frontend_pending_frames(const tfq_frontend *f, size_t n);
/* Consumes all n samples, writes the completed frames [frames, n_mels] to out; returns the
 * number written, or -1 if out_frames is too small or a sample is not finite (nothing consumed). */
TFQ_STREAM_API long tfq_frontend_accept(tfq_frontend *f, const float *samples, size_t n,
                                        float *out, size_t out_frames);
/* The mel filterbank [n_mels, n_fft/2 + 1] (librosa.filters.mel, Slaney). */
TFQ_STREAM_API const float *tfq_frontend_mel_basis(const tfq_frontend *f, int *n_mels, int *n_bins);

#ifdef __cplusplus
}
#endif

#endif /* TFQ_STREAM_H */
