/*
 * JNI bridge: com.tfqasr.TfqRecognizer / TfqStream (android_demo/app/src/main/java/com/tfqasr)
 * over the streaming core (tfq/stream.h).  Thin on purpose: handles are the C pointers, errors
 * become exceptions carrying the core's one-line message, and everything else (metadata,
 * log-mel, model steps, CTC) is the same C code tfq_transcribe and the Python tests run.
 *
 * Exceptions: TfqException(status, message) for core failures, IllegalArgumentException for
 * NaN/Inf samples (nothing consumed, the stream stays usable), OutOfMemoryError.
 * Array ranges are checked in Java and again here before any copy.
 */
#include <jni.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/stream.h"

#define ERR_LEN 512
/* Audio is copied out of the Java array in pieces of this many samples: bounded native memory
 * for any chunk length, and the core's result does not depend on the chunking. */
#define PIECE 8192

static void throw_class(JNIEnv *env, const char *cls, const char *msg) {
  jclass c = (*env)->FindClass(env, cls);
  if (c) (*env)->ThrowNew(env, c, msg);  /* FindClass failing leaves its own exception */
}

static void throw_tfq(JNIEnv *env, int status, const char *msg) {
  jclass c = (*env)->FindClass(env, "com/tfqasr/TfqException");
  if (!c) return;
  jmethodID ctor = (*env)->GetMethodID(env, c, "<init>", "(ILjava/lang/String;)V");
  if (!ctor) return;
  jstring m = (*env)->NewStringUTF(env, msg && msg[0] ? msg : "tfq streaming core failed");
  if (!m) return;
  jobject e = (*env)->NewObject(env, c, ctor, (jint)status, m);
  if (e) (*env)->Throw(env, (jthrowable)e);
}

/* The stream's status as an exception; TFQ_OK throws nothing. */
static void check_stream(JNIEnv *env, tfq_stream *s, int rc) {
  if (rc == TFQ_OK) return;
  if (rc == TFQ_STREAM_ERR_ARGUMENT)
    throw_class(env, "java/lang/IllegalArgumentException", tfq_stream_error(s));
  else if (rc == TFQ_STREAM_ERR_MEMORY)
    throw_class(env, "java/lang/OutOfMemoryError", tfq_stream_error(s));
  else
    throw_tfq(env, rc, tfq_stream_error(s));
}

static int check_range(JNIEnv *env, jarray a, jint off, jint len) {
  if (!a) {
    throw_class(env, "java/lang/IllegalArgumentException", "samples is null");
    return 0;
  }
  jsize n = (*env)->GetArrayLength(env, a);
  if (off < 0 || len < 0 || off > n - len) {
    throw_class(env, "java/lang/IndexOutOfBoundsException", "sample range outside the array");
    return 0;
  }
  return 1;
}

/* Bytes of a C string as a Java byte[] (decoded as UTF-8 in Java: the vocabulary may hold any
 * character, and NewStringUTF takes modified UTF-8). */
static jbyteArray bytes(JNIEnv *env, const char *s) {
  if (!s) s = "";
  jsize n = (jsize)strlen(s);
  jbyteArray b = (*env)->NewByteArray(env, n);
  if (b && n) (*env)->SetByteArrayRegion(env, b, 0, n, (const jbyte *)s);
  return b;
}

#define REC(h) ((tfq_recognizer *)(intptr_t)(h))
#define STREAM(h) ((tfq_stream *)(intptr_t)(h))

JNIEXPORT jlong JNICALL Java_com_tfqasr_TfqRecognizer_nativeOpen(JNIEnv *env, jclass cls,
                                                                 jstring model, jstring litert,
                                                                 jint threads) {
  (void)cls;
  const char *m = model ? (*env)->GetStringUTFChars(env, model, NULL) : NULL;
  const char *l = litert ? (*env)->GetStringUTFChars(env, litert, NULL) : NULL;
  char err[ERR_LEN] = "";
  tfq_recognizer *r = NULL;
  int rc = TFQ_STREAM_ERR_ARGUMENT;
  if (m && (!litert || l)) rc = tfq_recognizer_open(m, l, (int)threads, &r, err, sizeof err);
  if (l) (*env)->ReleaseStringUTFChars(env, litert, l);
  if (m) (*env)->ReleaseStringUTFChars(env, model, m);
  if ((*env)->ExceptionCheck(env)) {  /* GetStringUTFChars ran out of memory */
    tfq_recognizer_close(r);
    return 0;
  }
  if (rc != TFQ_OK) {
    throw_tfq(env, rc, err[0] ? err : "model path is null");
    return 0;
  }
  return (jlong)(intptr_t)r;
}

JNIEXPORT void JNICALL Java_com_tfqasr_TfqRecognizer_nativeClose(JNIEnv *env, jclass cls,
                                                                 jlong h) {
  (void)env, (void)cls;
  tfq_recognizer_close(REC(h));
}

JNIEXPORT jint JNICALL Java_com_tfqasr_TfqRecognizer_nativeSampleRate(JNIEnv *env, jclass cls,
                                                                      jlong h) {
  (void)env, (void)cls;
  return tfq_recognizer_sample_rate(REC(h));
}

JNIEXPORT jint JNICALL Java_com_tfqasr_TfqRecognizer_nativeChunkFrames(JNIEnv *env, jclass cls,
                                                                       jlong h) {
  (void)env, (void)cls;
  return tfq_recognizer_chunk_frames(REC(h));
}

JNIEXPORT jlong JNICALL Java_com_tfqasr_TfqRecognizer_nativeStreamCreate(JNIEnv *env, jclass cls,
                                                                         jlong h) {
  (void)cls;
  char err[ERR_LEN] = "";
  tfq_stream *s = NULL;
  int rc = tfq_stream_create(REC(h), &s, err, sizeof err);
  if (rc != TFQ_OK) {
    if (rc == TFQ_STREAM_ERR_MEMORY) throw_class(env, "java/lang/OutOfMemoryError", err);
    else throw_tfq(env, rc, err);
    return 0;
  }
  return (jlong)(intptr_t)s;
}

JNIEXPORT void JNICALL Java_com_tfqasr_TfqRecognizer_nativeAcceptFloat(JNIEnv *env, jclass cls,
                                                                       jlong h, jfloatArray a,
                                                                       jint off, jint len) {
  (void)cls;
  if (!check_range(env, a, off, len)) return;
  tfq_stream *s = STREAM(h);
  float *buf = malloc(sizeof(float) * PIECE);
  if (!buf) {
    throw_class(env, "java/lang/OutOfMemoryError", "accept: no memory for a chunk of audio");
    return;
  }
  /* The core refuses a piece with a NaN/Inf and consumes nothing of it; scan the whole range
   * first so that nothing of the caller's chunk is consumed either. */
  for (jint done = 0; done < len;) {
    jint n = len - done < PIECE ? len - done : PIECE;
    (*env)->GetFloatArrayRegion(env, a, off + done, n, buf);
    for (jint i = 0; i < n; i++) {
      if (!isfinite(buf[i])) {
        char msg[160];
        snprintf(msg, sizeof msg, "audio chunk contains NaN or Inf samples (sample %ld); "
                 "nothing was consumed", (long)done + i);
        free(buf);
        throw_class(env, "java/lang/IllegalArgumentException", msg);
        return;
      }
    }
    done += n;
  }
  int rc = TFQ_OK;
  for (jint done = 0; done < len && rc == TFQ_OK;) {
    jint n = len - done < PIECE ? len - done : PIECE;
    (*env)->GetFloatArrayRegion(env, a, off + done, n, buf);
    rc = tfq_stream_accept(s, buf, (size_t)n);
    done += n;
  }
  if (len == 0) rc = tfq_stream_accept(s, buf, 0);  /* accept after finish still reports */
  free(buf);
  check_stream(env, s, rc);
}

JNIEXPORT void JNICALL Java_com_tfqasr_TfqRecognizer_nativeAcceptPcm16(JNIEnv *env, jclass cls,
                                                                       jlong h, jshortArray a,
                                                                       jint off, jint len) {
  (void)cls;
  if (!check_range(env, a, off, len)) return;
  tfq_stream *s = STREAM(h);
  jshort *pcm = malloc(sizeof(jshort) * PIECE);
  float *buf = malloc(sizeof(float) * PIECE);
  if (!pcm || !buf) {
    free(pcm);
    free(buf);
    throw_class(env, "java/lang/OutOfMemoryError", "accept: no memory for a chunk of audio");
    return;
  }
  int rc = len == 0 ? tfq_stream_accept(s, buf, 0) : TFQ_OK;
  for (jint done = 0; done < len && rc == TFQ_OK;) {
    jint n = len - done < PIECE ? len - done : PIECE;
    (*env)->GetShortArrayRegion(env, a, off + done, n, pcm);
    /* The scaling soundfile applies when it reads 16-bit PCM as float (and tfq_transcribe). */
    for (jint i = 0; i < n; i++) buf[i] = (float)pcm[i] / 32768.0f;
    rc = tfq_stream_accept(s, buf, (size_t)n);
    done += n;
  }
  free(pcm);
  free(buf);
  check_stream(env, s, rc);
}

JNIEXPORT jbyteArray JNICALL Java_com_tfqasr_TfqRecognizer_nativePartial(JNIEnv *env, jclass cls,
                                                                        jlong h) {
  (void)cls;
  return bytes(env, tfq_stream_partial(STREAM(h)));
}

JNIEXPORT jbyteArray JNICALL Java_com_tfqasr_TfqRecognizer_nativeFinish(JNIEnv *env, jclass cls,
                                                                       jlong h) {
  (void)cls;
  const char *text = NULL;
  int rc = tfq_stream_finish(STREAM(h), &text);
  if (rc != TFQ_OK) {
    check_stream(env, STREAM(h), rc);
    return NULL;
  }
  return bytes(env, text);
}

JNIEXPORT jdouble JNICALL Java_com_tfqasr_TfqRecognizer_nativeComputeSeconds(JNIEnv *env,
                                                                             jclass cls, jlong h) {
  (void)env, (void)cls;
  return tfq_stream_compute_seconds(STREAM(h));
}

JNIEXPORT jdouble JNICALL Java_com_tfqasr_TfqRecognizer_nativeAudioSeconds(JNIEnv *env,
                                                                           jclass cls, jlong h) {
  (void)env, (void)cls;
  return tfq_stream_audio_seconds(STREAM(h));
}

JNIEXPORT jlong JNICALL Java_com_tfqasr_TfqRecognizer_nativeSteps(JNIEnv *env, jclass cls,
                                                                  jlong h) {
  (void)env, (void)cls;
  return (jlong)tfq_stream_steps(STREAM(h));
}

JNIEXPORT void JNICALL Java_com_tfqasr_TfqRecognizer_nativeStreamDestroy(JNIEnv *env, jclass cls,
                                                                         jlong h) {
  (void)env, (void)cls;
  tfq_stream_destroy(STREAM(h));
}
