/*
 * The streaming core (stream.h): LiteRT through dlopen, the model's metadata, one model step
 * per chunk, greedy CTC.  Mirrors tfq_asr/streaming.py and tfq_asr/runtime/litert.py.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "tfq/litert_op.h"
#include "tfq/stream.h"

size_t tfq_frontend_feed_one(tfq_frontend *f, const float *samples, size_t n, float *out,
                             int *got);

#define METADATA_KEY "tfq_asr"
#define MSG 512
#define MAX_TENSORS 256
#define MAX_CHUNK_FRAMES 100000
#define MAX_STATE_ELEMENTS (64L << 20)
#define ALIGN 64

/* ---- LiteRT C API subset (ai-edge-litert 2.3.0; litert/c/ of google-ai-edge/LiteRT) ----- */
typedef void *lrt_handle;
typedef struct lrt_api {
  int (*CreateEnvironment)(int, const void *, lrt_handle *);
  void (*DestroyEnvironment)(lrt_handle);
  int (*CreateModelFromFile)(lrt_handle env, const char *, lrt_handle *);  /* env since 2.1.6 */
  void (*DestroyModel)(lrt_handle);
  int (*GetModelMetadata)(lrt_handle model, const char *key, const void **buf, size_t *size);
  int (*CreateOptions)(lrt_handle *);
  void (*DestroyOptions)(lrt_handle);
  int (*SetOptionsHardwareAccelerators)(lrt_handle, int);
  int (*CreateOpaqueOptions)(const char *id, void *payload, void (*deleter)(void *), lrt_handle *);
  int (*AddOpaqueOptions)(lrt_handle options, lrt_handle opaque);
  int (*AddCustomOpKernelOption)(lrt_handle, const char *, int, const void *, void *);
  int (*CreateCompiledModel)(lrt_handle env, lrt_handle model, lrt_handle options, lrt_handle *);
  void (*DestroyCompiledModel)(lrt_handle);
  int (*GetNumModelSignatures)(lrt_handle, size_t *);
  int (*GetModelSignature)(lrt_handle, size_t, lrt_handle *);
  int (*GetNumSignatureInputs)(lrt_handle, size_t *);
  int (*GetNumSignatureOutputs)(lrt_handle, size_t *);
  int (*GetSignatureInputName)(lrt_handle, size_t, const char **);
  int (*GetSignatureOutputName)(lrt_handle, size_t, const char **);
  int (*GetSignatureInputTensorByIndex)(lrt_handle, size_t, lrt_handle *);
  int (*GetSignatureOutputTensorByIndex)(lrt_handle, size_t, lrt_handle *);
  int (*GetRankedTensorType)(lrt_handle, tfq_lrt_tensor_type *);
  int (*GetCompiledModelOutputTensorLayouts)(lrt_handle, size_t, size_t, tfq_lrt_layout *, _Bool);
  int (*CreateTensorBufferFromHostMemory)(const tfq_lrt_tensor_type *, void *, size_t,
                                          void (*)(void *), lrt_handle *);
  void (*DestroyTensorBuffer)(lrt_handle);
  int (*RunCompiledModel)(lrt_handle, size_t, size_t, lrt_handle *, size_t, lrt_handle *);
  void *GetTensorBufferTensorType, *GetTensorBufferPackedSize, *LockTensorBuffer,
      *UnlockTensorBuffer;
} lrt_api;

static const struct { const char *name; size_t offset; } LRT_SYMBOLS[] = {
#define SYM(n) {"LiteRt" #n, offsetof(lrt_api, n)}
  SYM(CreateEnvironment), SYM(DestroyEnvironment), SYM(CreateModelFromFile), SYM(DestroyModel),
  SYM(GetModelMetadata), SYM(CreateOptions), SYM(DestroyOptions),
  SYM(SetOptionsHardwareAccelerators), SYM(CreateOpaqueOptions), SYM(AddOpaqueOptions),
  SYM(AddCustomOpKernelOption), SYM(CreateCompiledModel), SYM(DestroyCompiledModel),
  SYM(GetNumModelSignatures), SYM(GetModelSignature), SYM(GetNumSignatureInputs),
  SYM(GetNumSignatureOutputs), SYM(GetSignatureInputName), SYM(GetSignatureOutputName),
  SYM(GetSignatureInputTensorByIndex), SYM(GetSignatureOutputTensorByIndex),
  SYM(GetRankedTensorType), SYM(GetCompiledModelOutputTensorLayouts),
  SYM(CreateTensorBufferFromHostMemory), SYM(DestroyTensorBuffer), SYM(RunCompiledModel),
  SYM(GetTensorBufferTensorType), SYM(GetTensorBufferPackedSize), SYM(LockTensorBuffer),
  SYM(UnlockTensorBuffer),
#undef SYM
};

static const char *status_name(int s) {
  switch (s) {
    case 1: return "invalid argument";
    case 2: return "memory allocation failure";
    case 3: return "runtime failure";
    case 4: return "missing input tensor";
    case 5: return "unsupported";
    case 6: return "not found";
    case 500: return "file I/O error";
    case 501: return "invalid flatbuffer";
    case 502: return "dynamic loading error";
    case 504: return "compilation error";
    case 1000: return "index out of bounds";
    default: return "error";
  }
}

/* ---- Recognizer --------------------------------------------------------------------------- */
typedef struct tensor_io {
  char *name;
  size_t index;        /* in the signature */
  size_t elements;     /* float32 elements */
  float *data;         /* 64-byte aligned host memory the tensor buffer wraps */
  lrt_handle buffer;
  tfq_lrt_layout layout;
  /* A state's input or output: a second tensor buffer of this tensor's type over the memory
   * of its partner (the state's output or input), for the swapped steps. */
  lrt_handle swapped;
} tensor_io;

typedef struct state_map {
  size_t input, output;  /* indices into ins / outs */
  size_t elements;
} state_map;

struct tfq_recognizer {
  char *path;
  void *lib;
  lrt_api api;
  lrt_handle env, model, options, compiled;
  tfq_litert_context *ctx;
  int chunk_frames;
  tfq_frontend_params fp;
  float pad_value;
  char **vocab;
  size_t vocab_size;
  long blank;
  char **layers;
  size_t n_layers;
  tensor_io *ins, *outs;
  size_t n_ins, n_outs;
  size_t features_in, logits_out, logits_frames;
  state_map *states;
  size_t n_states;
  /* Two bindings: [0] the tensors' own buffers; [1] the same with each state's input and
   * output memory exchanged.  A step reads the state where the previous step wrote it, so the
   * bindings alternate and no state is copied between steps (1.6 MB per step in Conformer M). */
  lrt_handle *in_buffers[2], *out_buffers[2];
  int parity;  /* the binding of the next step: the state lives in ins (0) or outs (1) */
  /* The stream whose state sits in the state memory (NULL: none).  Its own `state` arrays are
   * stale while it is resident; it is saved there when another stream runs. */
  struct tfq_stream *resident;
};

struct tfq_stream {
  tfq_recognizer *r;
  tfq_frontend *fe;
  float *pending;        /* [chunk_frames, n_mels] */
  int n_pending;
  float **state;         /* per state: the current value (unless the stream is resident) */
  char *text;
  size_t text_len, text_cap;
  int space_pending;     /* a space decoded after a word: written when the next word starts */
  long last;
  int finished, failed;
  long steps;
  double compute, samples;
  char error[MSG];
};

static void set_err(char *err, size_t size, const char *fmt, ...) {
  if (!err || !size) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, size, fmt, ap);
  va_end(ap);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static void free_tensors(tfq_recognizer *r, tensor_io *t, size_t n) {
  if (!t) return;
  for (size_t i = 0; i < n; i++) {
    if (t[i].buffer) r->api.DestroyTensorBuffer(t[i].buffer);
    if (t[i].swapped) r->api.DestroyTensorBuffer(t[i].swapped);
    free(t[i].data);
    free(t[i].name);
  }
  free(t);
}

void tfq_recognizer_close(tfq_recognizer *r) {
  if (!r) return;
  free_tensors(r, r->ins, r->n_ins);
  free_tensors(r, r->outs, r->n_outs);
  if (r->compiled) r->api.DestroyCompiledModel(r->compiled);
  if (r->options) r->api.DestroyOptions(r->options);
  if (r->model) r->api.DestroyModel(r->model);
  if (r->env) r->api.DestroyEnvironment(r->env);
  if (r->ctx) tfq_litert_context_destroy(r->ctx);
  for (size_t i = 0; i < r->vocab_size; i++) free(r->vocab[i]);
  free(r->vocab);
  for (size_t i = 0; i < r->n_layers; i++) free(r->layers[i]);
  free(r->layers);
  free(r->states);
  for (int b = 0; b < 2; b++) {
    free(r->in_buffers[b]);
    free(r->out_buffers[b]);
  }
  /* libLiteRt.so stays loaded: unloading a C++ runtime with thread-local state and static
   * destructors while other recognizers may use it is not worth the risk. */
  free(r->path);
  free(r);
}

int tfq_recognizer_chunk_frames(const tfq_recognizer *r) { return r ? r->chunk_frames : 0; }
int tfq_recognizer_sample_rate(const tfq_recognizer *r) { return r ? r->fp.sample_rate : 0; }

/* ---- Metadata ------------------------------------------------------------------------------ */
static const tfq_json *need(const tfq_json *obj, const char *key, tfq_json_type type,
                            const char *where, const char *path, char *err, size_t err_size) {
  static const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
  const tfq_json *v = tfq_json_get(obj, key);
  if (!v) {
    set_err(err, err_size, "%s: streaming metadata has no %s%s: re-export it with the current "
            "tools/convert.py --streaming", path, where, key);
    return NULL;
  }
  if (v->type != type) {
    set_err(err, err_size, "%s: streaming metadata %s%s is not %s", path, where, key, names[type]);
    return NULL;
  }
  return v;
}

static int need_int(const tfq_json *obj, const char *key, long lo, long hi, long *out,
                    const char *where, const char *path, char *err, size_t err_size) {
  const tfq_json *v = need(obj, key, TFQ_JSON_NUMBER, where, path, err, err_size);
  if (!v) return 0;
  if (!tfq_json_int(v, lo, hi, out)) {
    set_err(err, err_size, "%s: streaming metadata %s%s = %g is not an integer in %ld..%ld",
            path, where, key, v->number, lo, hi);
    return 0;
  }
  return 1;
}

static int need_num(const tfq_json *obj, const char *key, double *out, const char *where,
                    const char *path, char *err, size_t err_size) {
  const tfq_json *v = need(obj, key, TFQ_JSON_NUMBER, where, path, err, err_size);
  if (v) *out = v->number;
  return v != NULL;
}

typedef struct meta_state { const char *input, *output; long elements; } meta_state;

static int read_frontend(tfq_recognizer *r, const tfq_json *fe, char *err, size_t es) {
  const char *w = "frontend.", *p = r->path;
  long v;
  tfq_frontend_params *fp = &r->fp;
  if (!need_int(fe, "sample_rate", 1000, 192000, &v, w, p, err, es)) return 0;
  fp->sample_rate = (int)v;
  if (!need_int(fe, "n_mels", 1, 512, &v, w, p, err, es)) return 0;
  fp->n_mels = (int)v;
  if (!need_int(fe, "win", 2, 16384, &v, w, p, err, es)) return 0;
  fp->win = (int)v;
  if (!need_int(fe, "hop", 1, 16384, &v, w, p, err, es)) return 0;
  fp->hop = (int)v;
  if (!need_int(fe, "n_fft", 2, 16384, &v, w, p, err, es)) return 0;
  fp->n_fft = (int)v;
  if (!need_num(fe, "fmin", &fp->fmin, w, p, err, es) ||
      !need_num(fe, "fmax", &fp->fmax, w, p, err, es) ||
      !need_num(fe, "log_floor", &fp->log_floor, w, p, err, es))
    return 0;
  const tfq_json *window = need(fe, "window", TFQ_JSON_STRING, w, p, err, es);
  const tfq_json *mel = need(fe, "mel", TFQ_JSON_STRING, w, p, err, es);
  if (!window || !mel) return 0;
  if (strncmp(window->string, "hann", 4) != 0 || !strstr(window->string, "periodic")) {
    set_err(err, es, "%s: frontend window \"%s\" is not supported (periodic hann only)", p, window->string);
    return 0;
  }
  if (strncmp(mel->string, "slaney", 6) != 0) {
    set_err(err, es, "%s: frontend mel scale \"%s\" is not supported (slaney only)", p, mel->string);
    return 0;
  }
  const tfq_json *center = tfq_json_get(fe, "center");
  if (center && !(center->type == TFQ_JSON_BOOL && center->number == 0)) {
    set_err(err, es, "%s: frontend center must be false (centered frames are not supported)", p);
    return 0;
  }
  char ferr[160];
  tfq_frontend *probe = tfq_frontend_create(fp, ferr, sizeof ferr);
  if (!probe) {
    set_err(err, es, "%s: streaming metadata %s", p, ferr);
    return 0;
  }
  tfq_frontend_destroy(probe);
  r->pad_value = (float)log(fp->log_floor);
  return 1;
}

static int read_metadata(tfq_recognizer *r, const char *text, size_t size, meta_state **states,
                         size_t *n_states, char **features, char **logits, char *err, size_t es) {
  char jerr[200];
  const char *p = r->path;
  tfq_json *root = tfq_json_parse(text, size, jerr, sizeof jerr);
  int ok = 0;
  *states = NULL;
  *n_states = 0;
  *features = *logits = NULL;
  if (!root) {
    set_err(err, es, "%s: the tfq_asr metadata is not valid JSON (%s)", p, jerr);
    return 0;
  }
  const tfq_json *s = tfq_json_get(root, "streaming");
  if (root->type != TFQ_JSON_OBJECT || !s) {
    set_err(err, es, "%s: not a streaming model (no streaming state in its metadata); export "
            "one with tools/convert.py --streaming", p);
    goto done;
  }
  if (s->type != TFQ_JSON_OBJECT) {
    set_err(err, es, "%s: streaming metadata is not an object", p);
    goto done;
  }
  const char *w = "streaming.";
  long v;
  if (!need_int(s, "chunk_frames", 1, MAX_CHUNK_FRAMES, &v, w, p, err, es)) goto done;
  r->chunk_frames = (int)v;
  const tfq_json *feat = need(s, "features", TFQ_JSON_STRING, w, p, err, es);
  const tfq_json *lg = need(s, "logits", TFQ_JSON_STRING, w, p, err, es);
  const tfq_json *st = need(s, "states", TFQ_JSON_ARRAY, w, p, err, es);
  const tfq_json *voc = need(s, "vocabulary", TFQ_JSON_ARRAY, w, p, err, es);
  const tfq_json *fe = feat && lg && st && voc ? need(s, "frontend", TFQ_JSON_OBJECT, w, p, err, es) : NULL;
  if (!fe) goto done;
  if (voc->length < 2 || voc->length > 1000000) {
    set_err(err, es, "%s: streaming.vocabulary has %zu entries", p, voc->length);
    goto done;
  }
  if (!need_int(s, "blank", 0, (long)voc->length - 1, &r->blank, w, p, err, es)) goto done;
  const tfq_json *nc = tfq_json_get(s, "num_classes");
  if (nc && !(tfq_json_int(nc, 1, 1000000, &v) && (size_t)v == voc->length)) {
    set_err(err, es, "%s: streaming.num_classes does not match the %zu vocabulary entries", p,
            voc->length);
    goto done;
  }
  r->vocab = calloc(voc->length, sizeof(char *));
  if (!r->vocab) goto oom;
  for (const tfq_json *c = voc->child; c; c = c->next) {
    if (c->type != TFQ_JSON_STRING) {
      set_err(err, es, "%s: streaming.vocabulary[%zu] is not a string", p, r->vocab_size);
      goto done;
    }
    if (!(r->vocab[r->vocab_size] = dup_str(c->string))) goto oom;
    r->vocab_size++;
  }
  if (!read_frontend(r, fe, err, es)) goto done;
  *states = calloc(st->length ? st->length : 1, sizeof(meta_state));
  if (!*states) goto oom;
  for (const tfq_json *c = st->child; c; c = c->next) {
    size_t i = *n_states;
    char where[48];
    snprintf(where, sizeof where, "streaming.states[%zu].", i);
    if (c->type != TFQ_JSON_OBJECT) {
      set_err(err, es, "%s: streaming.states[%zu] is not an object", p, i);
      goto done;
    }
    const tfq_json *in = need(c, "input", TFQ_JSON_STRING, where, p, err, es);
    const tfq_json *out = in ? need(c, "output", TFQ_JSON_STRING, where, p, err, es) : NULL;
    const tfq_json *shape = out ? need(c, "shape", TFQ_JSON_ARRAY, where, p, err, es) : NULL;
    if (!shape) goto done;
    long elements = 1;
    for (const tfq_json *d = shape->child; d; d = d->next) {
      long dim;
      if (!tfq_json_int(d, 1, MAX_STATE_ELEMENTS, &dim) || elements > MAX_STATE_ELEMENTS / dim) {
        set_err(err, es, "%s: %sshape has a bad dimension (integers >= 1, at most %ld elements)",
                p, where, MAX_STATE_ELEMENTS);
        goto done;
      }
      elements *= dim;
    }
    (*states)[i].elements = elements;
    (*n_states)++;
    (*states)[i].input = dup_str(in->string);
    (*states)[i].output = dup_str(out->string);
    if (!(*states)[i].input || !(*states)[i].output) goto oom;
  }
  /* Optional: layer names, to name the layer in op errors. */
  const tfq_json *layers = tfq_json_get(root, "layers");
  if (layers && layers->type == TFQ_JSON_ARRAY && layers->length) {
    r->layers = calloc(layers->length, sizeof(char *));
    if (!r->layers) goto oom;
    for (const tfq_json *c = layers->child; c; c = c->next) {
      if (!(r->layers[r->n_layers] = dup_str(c->type == TFQ_JSON_STRING ? c->string : "?"))) goto oom;
      r->n_layers++;
    }
  }
  *features = dup_str(feat->string);
  *logits = dup_str(lg->string);
  if (!*features || !*logits) goto oom;
  ok = 1;
  goto done;
oom:
  set_err(err, es, "%s: out of memory reading the metadata", p);
done:
  if (!ok) {
    for (size_t i = 0; *states && i < *n_states; i++) {
      free((char *)(*states)[i].input);
      free((char *)(*states)[i].output);
    }
    free(*states);
    free(*features);
    free(*logits);
    *states = NULL;
    *n_states = 0;
    *features = *logits = NULL;
  }
  tfq_json_free(root);
  return ok;
}

/* ---- Opening ------------------------------------------------------------------------------- */
static int lrt_check(tfq_recognizer *r, int status, const char *call, char *err, size_t es) {
  if (status == 0) return 1;
  set_err(err, es, "%s: %s failed: %s (LiteRtStatus %d)", r->path, call, status_name(status), status);
  return 0;
}

static void *aligned_floats(size_t n) {
  size_t bytes = (n ? n : 1) * sizeof(float);
  bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
  void *p = NULL;
  if (posix_memalign(&p, ALIGN, bytes) != 0) return NULL;
  memset(p, 0, bytes);
  return p;
}

static size_t layout_elements(const tfq_lrt_layout *l, int *ok) {
  size_t n = 1;
  *ok = l->rank <= TFQ_LRT_MAX_RANK;
  for (unsigned d = 0; *ok && d < l->rank; d++) {
    if (l->dims[d] < 1 || n > (SIZE_MAX / 8) / (size_t)l->dims[d]) *ok = 0;
    else n *= (size_t)l->dims[d];
  }
  return n;
}

/* A float32 tensor buffer of t's layout over `data` (t->elements floats, not owned). */
static int wrap_buffer(tfq_recognizer *r, const tensor_io *t, float *data, lrt_handle *out,
                       char *err, size_t es) {
  tfq_lrt_tensor_type type;
  memset(&type, 0, sizeof type);
  type.element_type = TFQ_LRT_ELEMENT_FLOAT32;
  type.layout.rank = t->layout.rank;
  for (unsigned d = 0; d < t->layout.rank; d++) type.layout.dims[d] = t->layout.dims[d];
  return lrt_check(r, r->api.CreateTensorBufferFromHostMemory(&type, data,
                   t->elements * sizeof(float), NULL, out),
                   "LiteRtCreateTensorBufferFromHostMemory", err, es);
}

static int make_buffer(tfq_recognizer *r, tensor_io *t, const tfq_lrt_layout *layout,
                       char *err, size_t es) {
  t->layout = *layout;
  if (!(t->data = aligned_floats(t->elements))) {
    set_err(err, es, "%s: out of memory for tensor %s", r->path, t->name);
    return 0;
  }
  return wrap_buffer(r, t, t->data, &t->buffer, err, es);
}

static long find_name(const tensor_io *t, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (t[i].name && strcmp(t[i].name, name) == 0) return (long)i;
  return -1;
}

/* The model once on binding b, then the TFQ ops' error slot (LiteRT ignores a custom kernel's
 * status).  Returns the run's LiteRtStatus; when that is 0, *op_status is the ops' tfq_status
 * and, if not TFQ_OK, why says which layer failed ("TFQ op layer 'name' (#i): message (status)"). */
static int run_model(tfq_recognizer *r, int b, int *op_status, char *why, size_t size) {
  tfq_litert_clear_error(r->ctx);
  *op_status = TFQ_OK;
  int st = r->api.RunCompiledModel(r->compiled, 0, r->n_ins, r->in_buffers[b], r->n_outs,
                                   r->out_buffers[b]);
  tfq_clean_vector_state();  /* before the frontend and decoding of the next step */
  if (st != 0) return st;
  char msg[300];
  int32_t layer = -1;
  *op_status = tfq_litert_error(r->ctx, msg, sizeof msg, &layer, NULL);
  if (*op_status != TFQ_OK && layer >= 0 && (size_t)layer < r->n_layers)
    snprintf(why, size, "TFQ op layer '%s' (#%d): %s (%s)", r->layers[layer], (int)layer, msg,
             tfq_status_str(*op_status));
  else if (*op_status != TFQ_OK)
    snprintf(why, size, "TFQ op layer #%d: %s (%s)", (int)layer, msg, tfq_status_str(*op_status));
  return 0;
}

/* One step on the zeroed buffers at load, where XNNPACK also packs its weights: our ops make
 * their column-interleaved copies and workspaces on first use, which would otherwise land in
 * the first chunk's latency.  A file whose ops fail is refused here, naming the layer.  The
 * inputs are not written, and no stream is resident, so the first stream loads its own state. */
static int warm_up(tfq_recognizer *r, char *err, size_t es) {
  char why[600];
  int op, st = run_model(r, 0, &op, why, sizeof why);
  if (!lrt_check(r, st, "LiteRtRunCompiledModel (warm-up step)", err, es))
    return TFQ_STREAM_ERR_RUN;
  if (op != TFQ_OK) {
    set_err(err, es, "%s: %s, in the warm-up step", r->path, why);
    return TFQ_STREAM_ERR_RUN;
  }
  return TFQ_OK;
}

static int open_model(tfq_recognizer *r, const char *litert_library, int num_threads, char *err,
                      size_t es) {
  const char *lib_name = litert_library ? litert_library : "libLiteRt.so";
  r->lib = dlopen(lib_name, RTLD_NOW | RTLD_LOCAL);
  if (!r->lib) {
    const char *why = dlerror();
    set_err(err, es, "%s: cannot load the LiteRT runtime %s: %s", r->path, lib_name,
            why ? why : "unknown dlopen error");
    return TFQ_STREAM_ERR_LITERT;
  }
  for (size_t i = 0; i < sizeof LRT_SYMBOLS / sizeof LRT_SYMBOLS[0]; i++) {
    void *sym = dlsym(r->lib, LRT_SYMBOLS[i].name);
    if (!sym) {
      set_err(err, es, "%s: %s does not export %s (ai-edge-litert 2.3.0 expected)", r->path,
              lib_name, LRT_SYMBOLS[i].name);
      return TFQ_STREAM_ERR_LITERT;
    }
    memcpy((char *)&r->api + LRT_SYMBOLS[i].offset, &sym, sizeof sym);
  }
  lrt_api *a = &r->api;
  if (!lrt_check(r, a->CreateEnvironment(0, NULL, &r->env), "LiteRtCreateEnvironment", err, es))
    return TFQ_STREAM_ERR_LITERT;
  int st = a->CreateModelFromFile(r->env, r->path, &r->model);
  if (st != 0) {
    set_err(err, es, "%s: not a readable .tflite model (LiteRtCreateModelFromFile: %s, "
            "LiteRtStatus %d)", r->path, status_name(st), st);
    r->model = NULL;
    return TFQ_STREAM_ERR_FILE;
  }
  const void *md = NULL;
  size_t md_size = 0;
  st = a->GetModelMetadata(r->model, METADATA_KEY, &md, &md_size);
  if (st != 0 || !md) {
    set_err(err, es, "%s: not a streaming model (no \"%s\" metadata); export one with "
            "tools/convert.py --streaming", r->path, METADATA_KEY);
    return TFQ_STREAM_ERR_MODEL;
  }
  meta_state *ms = NULL;
  size_t n_ms = 0;
  char *features = NULL, *logits = NULL;
  int rc = TFQ_STREAM_ERR_MODEL;
  if (!read_metadata(r, md, md_size, &ms, &n_ms, &features, &logits, err, es)) goto out;

  rc = TFQ_STREAM_ERR_LITERT;
  if (!lrt_check(r, a->CreateOptions(&r->options), "LiteRtCreateOptions", err, es) ||
      !lrt_check(r, a->SetOptionsHardwareAccelerators(r->options, 1),
                 "LiteRtSetOptionsHardwareAccelerators", err, es))
    goto out;
  char toml[64];
  snprintf(toml, sizeof toml, "num_threads = %d\n", num_threads);
  char *payload = dup_str(toml);  /* the opaque options own it and free it with free() */
  lrt_handle opaque = NULL;
  if (!payload) goto out;
  if (!lrt_check(r, a->CreateOpaqueOptions("xnnpack", payload, free, &opaque),
                 "LiteRtCreateOpaqueOptions", err, es)) {
    free(payload);
    goto out;
  }
  if (!lrt_check(r, a->AddOpaqueOptions(r->options, opaque), "LiteRtAddOpaqueOptions", err, es))
    goto out;
  tfq_litert_api op_api;
  memcpy(&op_api.get_tensor_type, &a->GetTensorBufferTensorType, sizeof(void *));
  memcpy(&op_api.get_packed_size, &a->GetTensorBufferPackedSize, sizeof(void *));
  memcpy(&op_api.lock, &a->LockTensorBuffer, sizeof(void *));
  memcpy(&op_api.unlock, &a->UnlockTensorBuffer, sizeof(void *));
  if (!(r->ctx = tfq_litert_context_create(&op_api))) {
    set_err(err, es, "%s: cannot create the TFQ op context", r->path);
    goto out;
  }
  if (!lrt_check(r, a->AddCustomOpKernelOption(r->options, TFQ_OP_NAME, TFQ_OP_VERSION,
                                               tfq_litert_kernel(), r->ctx),
                 "LiteRtAddCustomOpKernelOption", err, es) ||
      !lrt_check(r, a->AddCustomOpKernelOption(r->options, TFQ_DW_OP_NAME, TFQ_DW_OP_VERSION,
                                               tfq_litert_depthwise_kernel(), r->ctx),
                 "LiteRtAddCustomOpKernelOption", err, es) ||
      !lrt_check(r, a->AddCustomOpKernelOption(r->options, TFQ_CONV_OP_NAME, TFQ_CONV_OP_VERSION,
                                               tfq_litert_conv_kernel(), r->ctx),
                 "LiteRtAddCustomOpKernelOption", err, es) ||
      !lrt_check(r, a->CreateCompiledModel(r->env, r->model, r->options, &r->compiled),
                 "LiteRtCreateCompiledModel", err, es))
    goto out;

  /* Signature 0: inputs and outputs, all float32. */
  size_t n_sig = 0;
  lrt_handle sig = NULL;
  if (!lrt_check(r, a->GetNumModelSignatures(r->model, &n_sig), "LiteRtGetNumModelSignatures", err, es))
    goto out;
  rc = TFQ_STREAM_ERR_MODEL;
  if (n_sig < 1) {
    set_err(err, es, "%s: the model has no signature", r->path);
    goto out;
  }
  rc = TFQ_STREAM_ERR_LITERT;
  if (!lrt_check(r, a->GetModelSignature(r->model, 0, &sig), "LiteRtGetModelSignature", err, es) ||
      !lrt_check(r, a->GetNumSignatureInputs(sig, &r->n_ins), "LiteRtGetNumSignatureInputs", err, es) ||
      !lrt_check(r, a->GetNumSignatureOutputs(sig, &r->n_outs), "LiteRtGetNumSignatureOutputs", err, es))
    goto out;
  rc = TFQ_STREAM_ERR_MODEL;
  if (r->n_ins < 1 || r->n_ins > MAX_TENSORS || r->n_outs < 1 || r->n_outs > MAX_TENSORS) {
    set_err(err, es, "%s: %zu inputs and %zu outputs (1..%d each expected)", r->path, r->n_ins,
            r->n_outs, MAX_TENSORS);
    r->n_ins = r->n_outs = 0;
    goto out;
  }
  r->ins = calloc(r->n_ins, sizeof(tensor_io));
  r->outs = calloc(r->n_outs, sizeof(tensor_io));
  for (int b = 0; b < 2; b++) {
    r->in_buffers[b] = calloc(r->n_ins, sizeof(lrt_handle));
    r->out_buffers[b] = calloc(r->n_outs, sizeof(lrt_handle));
  }
  tfq_lrt_layout *out_layouts = calloc(r->n_outs, sizeof(tfq_lrt_layout));
  if (!r->ins || !r->outs || !r->in_buffers[0] || !r->out_buffers[0] || !r->in_buffers[1] ||
      !r->out_buffers[1] || !out_layouts) {
    free(out_layouts);
    rc = TFQ_STREAM_ERR_MEMORY;
    set_err(err, es, "%s: out of memory", r->path);
    goto out;
  }
  for (int kind = 0; kind < 2; kind++) {
    size_t n = kind ? r->n_outs : r->n_ins;
    tensor_io *t = kind ? r->outs : r->ins;
    if (kind && !lrt_check(r, a->GetCompiledModelOutputTensorLayouts(r->compiled, 0, n, out_layouts, 1),
                           "LiteRtGetCompiledModelOutputTensorLayouts", err, es)) {
      rc = TFQ_STREAM_ERR_LITERT;  /* e.g. a corrupted file whose ops fail to prepare */
      goto layouts_done;
    }
    for (size_t i = 0; i < n; i++) {
      const char *name = NULL;
      lrt_handle tensor = NULL;
      tfq_lrt_tensor_type type;
      memset(&type, 0, sizeof type);
      if (!lrt_check(r, (kind ? a->GetSignatureOutputName : a->GetSignatureInputName)(sig, i, &name),
                     kind ? "LiteRtGetSignatureOutputName" : "LiteRtGetSignatureInputName", err, es) ||
          !lrt_check(r, (kind ? a->GetSignatureOutputTensorByIndex : a->GetSignatureInputTensorByIndex)(sig, i, &tensor),
                     kind ? "LiteRtGetSignatureOutputTensorByIndex" : "LiteRtGetSignatureInputTensorByIndex",
                     err, es) ||
          !lrt_check(r, a->GetRankedTensorType(tensor, &type), "LiteRtGetRankedTensorType", err, es)) {
        rc = TFQ_STREAM_ERR_LITERT;
        goto layouts_done;
      }
      t[i].index = i;
      if (!(t[i].name = dup_str(name ? name : ""))) goto layouts_done;
      const tfq_lrt_layout *layout = kind ? &out_layouts[i] : &type.layout;
      int ok;
      t[i].elements = layout_elements(layout, &ok);
      if (type.element_type != TFQ_LRT_ELEMENT_FLOAT32 || !ok) {
        set_err(err, es, "%s: %s \"%s\" is not a float32 tensor of fixed shape", r->path,
                kind ? "output" : "input", t[i].name);
        goto layouts_done;
      }
      if (!make_buffer(r, &t[i], layout, err, es)) { rc = TFQ_STREAM_ERR_LITERT; goto layouts_done; }
      (kind ? r->out_buffers : r->in_buffers)[0][i] = t[i].buffer;
      (kind ? r->out_buffers : r->in_buffers)[1][i] = t[i].buffer;
      if (kind && strcmp(t[i].name, logits) == 0) {
        /* [1, T', classes] (or [T', classes]) */
        if (layout->rank < 1 || (size_t)layout->dims[layout->rank - 1] != r->vocab_size) {
          set_err(err, es, "%s: logits output \"%s\" has %d classes, the vocabulary %zu", r->path,
                  logits, layout->rank ? layout->dims[layout->rank - 1] : 0, r->vocab_size);
          goto layouts_done;
        }
        r->logits_frames = t[i].elements / r->vocab_size;
      }
    }
  }
  rc = TFQ_OK;
layouts_done:
  free(out_layouts);
  if (rc != TFQ_OK) goto out;
  rc = TFQ_STREAM_ERR_MODEL;
  long fi = find_name(r->ins, r->n_ins, features), li = find_name(r->outs, r->n_outs, logits);
  if (fi < 0 || li < 0) {
    set_err(err, es, "%s: streaming metadata names %s \"%s\" the model does not have", r->path,
            fi < 0 ? "input" : "output", fi < 0 ? features : logits);
    goto out;
  }
  r->features_in = (size_t)fi;
  r->logits_out = (size_t)li;
  if (r->ins[fi].elements != (size_t)r->chunk_frames * (size_t)r->fp.n_mels) {
    set_err(err, es, "%s: input \"%s\" holds %zu values, chunk_frames x n_mels = %d x %d expected",
            r->path, features, r->ins[fi].elements, r->chunk_frames, r->fp.n_mels);
    goto out;
  }
  if (n_ms + 1 != r->n_ins) {
    set_err(err, es, "%s: the model has %zu inputs, the metadata names %zu (features + states)",
            r->path, r->n_ins, n_ms + 1);
    goto out;
  }
  if (!(r->states = calloc(n_ms ? n_ms : 1, sizeof(state_map)))) {
    rc = TFQ_STREAM_ERR_MEMORY;
    set_err(err, es, "%s: out of memory", r->path);
    goto out;
  }
  for (size_t i = 0; i < n_ms; i++) {
    long si = find_name(r->ins, r->n_ins, ms[i].input), so = find_name(r->outs, r->n_outs, ms[i].output);
    if (si < 0 || so < 0) {
      set_err(err, es, "%s: streaming metadata names state %s \"%s\" the model does not have",
              r->path, si < 0 ? "input" : "output", si < 0 ? ms[i].input : ms[i].output);
      goto out;
    }
    size_t e = (size_t)ms[i].elements;
    if (r->ins[si].elements != e || r->outs[so].elements != e) {
      set_err(err, es, "%s: state \"%s\" -> \"%s\": the metadata shape holds %zu values, the "
              "model's tensors %zu and %zu", r->path, ms[i].input, ms[i].output, e,
              r->ins[si].elements, r->outs[so].elements);
      goto out;
    }
    r->states[i].input = (size_t)si;
    r->states[i].output = (size_t)so;
    r->states[i].elements = e;
    tensor_io *in = &r->ins[si], *o = &r->outs[so];
    if (in->swapped || o->swapped || (size_t)si == r->features_in || (size_t)so == r->logits_out) {
      set_err(err, es, "%s: streaming metadata names state \"%s\" -> \"%s\", whose tensors "
              "another state, the features or the logits use", r->path, ms[i].input,
              ms[i].output);
      goto out;
    }
    if (!wrap_buffer(r, in, o->data, &in->swapped, err, es) ||
        !wrap_buffer(r, o, in->data, &o->swapped, err, es)) {
      rc = TFQ_STREAM_ERR_LITERT;
      goto out;
    }
    r->in_buffers[1][si] = in->swapped;
    r->out_buffers[1][so] = o->swapped;
  }
  r->n_states = n_ms;
  rc = warm_up(r, err, es);
out:
  for (size_t i = 0; i < n_ms; i++) {
    free((char *)ms[i].input);
    free((char *)ms[i].output);
  }
  free(ms);
  free(features);
  free(logits);
  return rc;
}

int tfq_recognizer_open(const char *model_path, const char *litert_library, int num_threads,
                        tfq_recognizer **out, char *err, size_t err_size) {
  if (err && err_size) err[0] = '\0';
  if (!out) {
    set_err(err, err_size, "tfq_recognizer_open: out is NULL");
    return TFQ_STREAM_ERR_ARGUMENT;
  }
  *out = NULL;
  if (!model_path || !*model_path) {
    set_err(err, err_size, "tfq_recognizer_open: no model path");
    return TFQ_STREAM_ERR_ARGUMENT;
  }
  if (num_threads < 1 || num_threads > 256) {
    set_err(err, err_size, "%s: num_threads %d outside 1..256", model_path, num_threads);
    return TFQ_STREAM_ERR_ARGUMENT;
  }
  /* Check the file before LiteRT sees it: its loader follows offsets unchecked (a truncated
   * file crashed it) and reports less. */
  FILE *fp = fopen(model_path, "rb");
  if (!fp) {
    set_err(err, err_size, "%s: cannot open the model: %s", model_path, strerror(errno));
    return TFQ_STREAM_ERR_FILE;
  }
  size_t cap = 1 << 20, size = 0;
  uint8_t *bytes = malloc(cap);
  while (bytes) {
    if (size == cap) {
      uint8_t *b = cap < ((size_t)1 << 31) ? realloc(bytes, cap * 2) : NULL;
      if (!b) { free(bytes); bytes = NULL; break; }
      bytes = b;
      cap *= 2;
    }
    size_t got = fread(bytes + size, 1, cap - size, fp);
    size += got;
    if (got == 0) break;
  }
  int read_error = ferror(fp);
  fclose(fp);
  if (!bytes || read_error) {
    free(bytes);
    set_err(err, err_size, "%s: cannot read the model (%s)", model_path,
            read_error ? "read error" : "out of memory or larger than 2 GiB");
    return TFQ_STREAM_ERR_FILE;
  }
  char why[200];
  int valid = tfq_tflite_check(bytes, size, why, sizeof why);
  free(bytes);
  if (!valid) {
    set_err(err, err_size, "%s: not a valid .tflite model (%s)", model_path, why);
    return TFQ_STREAM_ERR_FILE;
  }
  tfq_recognizer *r = calloc(1, sizeof *r);
  if (!r || !(r->path = dup_str(model_path))) {
    free(r);
    set_err(err, err_size, "%s: out of memory", model_path);
    return TFQ_STREAM_ERR_MEMORY;
  }
  int rc = open_model(r, litert_library, num_threads, err, err_size);
  if (rc != TFQ_OK) {
    tfq_recognizer_close(r);
    return rc;
  }
  *out = r;
  return TFQ_OK;
}

/* ---- Streams ------------------------------------------------------------------------------- */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail_stream(tfq_stream *s, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->error, sizeof s->error, fmt, ap);
  va_end(ap);
  if (status == TFQ_STREAM_ERR_RUN || status == TFQ_STREAM_ERR_MEMORY) s->failed = 1;
  return status;
}

void tfq_stream_destroy(tfq_stream *s) {
  if (!s) return;
  if (s->r && s->r->resident == s) s->r->resident = NULL;
  tfq_frontend_destroy(s->fe);
  free(s->pending);
  if (s->state)
    for (size_t i = 0; i < s->r->n_states; i++) free(s->state[i]);
  free(s->state);
  free(s->text);
  free(s);
}

int tfq_stream_create(tfq_recognizer *r, tfq_stream **out, char *err, size_t err_size) {
  if (err && err_size) err[0] = '\0';
  if (!r || !out) {
    set_err(err, err_size, "tfq_stream_create: NULL argument");
    return TFQ_STREAM_ERR_ARGUMENT;
  }
  *out = NULL;
  tfq_stream *s = calloc(1, sizeof *s);
  if (!s) goto oom;
  s->r = r;
  s->last = r->blank;
  if (!(s->fe = tfq_frontend_create(&r->fp, err, err_size))) goto fail;
  s->pending = malloc(sizeof(float) * (size_t)r->chunk_frames * (size_t)r->fp.n_mels);
  s->state = calloc(r->n_states ? r->n_states : 1, sizeof(float *));
  s->text_cap = 64;
  s->text = malloc(s->text_cap);
  if (!s->pending || !s->state || !s->text) goto oom;
  s->text[0] = '\0';
  for (size_t i = 0; i < r->n_states; i++)
    if (!(s->state[i] = calloc(r->states[i].elements, sizeof(float)))) goto oom;
  *out = s;
  return TFQ_OK;
oom:
  set_err(err, err_size, "%s: out of memory for a stream", r->path);
fail:
  tfq_stream_destroy(s);
  return TFQ_STREAM_ERR_MEMORY;
}

static int append_raw(tfq_stream *s, const char *piece) {
  size_t n = strlen(piece);
  if (s->text_len + n + 1 > s->text_cap) {
    size_t cap = s->text_cap;
    while (s->text_len + n + 1 > cap) cap *= 2;
    char *t = realloc(s->text, cap);
    if (!t) return 0;
    s->text = t;
    s->text_cap = cap;
  }
  memcpy(s->text + s->text_len, piece, n + 1);
  s->text_len += n;
  return 1;
}

/* The transcript as tfq_asr.text.decode_ids gives it: words joined by one space, none at either
 * end (CTC may emit a space first, or two in a row).  A space piece is held until a word
 * follows, so every partial is already in that form and a prefix of the final text. */
static int append_text(tfq_stream *s, const char *piece) {
  if (piece[0] == ' ' && piece[1] == '\0') {
    s->space_pending = s->text_len > 0;
    return 1;
  }
  if (s->space_pending) {
    s->space_pending = 0;
    if (!append_raw(s, " ")) return 0;
  }
  return append_raw(s, piece);
}

/* Where state i lives between steps: the memory the next step's binding reads it from. */
static float *state_memory(tfq_recognizer *r, size_t i) {
  return r->parity ? r->outs[r->states[i].output].data : r->ins[r->states[i].input].data;
}

/* One model step over s->pending (full). */
static int run_step(tfq_stream *s) {
  tfq_recognizer *r = s->r;
  memcpy(r->ins[r->features_in].data, s->pending,
         sizeof(float) * (size_t)r->chunk_frames * (size_t)r->fp.n_mels);
  /* Steps of one stream in a row keep its state in the state memory, where the last step
   * wrote it (no copy at all).  Another stream's step first saves the resident stream's state
   * and loads its own. */
  if (r->resident != s) {
    for (size_t i = 0; i < r->n_states; i++) {
      size_t bytes = sizeof(float) * r->states[i].elements;
      if (r->resident) memcpy(r->resident->state[i], state_memory(r, i), bytes);
      memcpy(state_memory(r, i), s->state[i], bytes);
    }
    r->resident = s;
  }
  char why[600];
  int op, st = run_model(r, r->parity, &op, why, sizeof why);
  r->parity ^= 1;  /* the new state is in this step's output memory: the next step's input */
  if (st != 0)
    return fail_stream(s, TFQ_STREAM_ERR_RUN, "%s: LiteRtRunCompiledModel failed: %s (LiteRtStatus %d)",
                       r->path, status_name(st), st);
  if (op != TFQ_OK)
    return fail_stream(s, TFQ_STREAM_ERR_RUN, "%s: %s; the outputs are invalid", r->path, why);
  s->steps++;
  const float *lg = r->outs[r->logits_out].data;
  size_t c = r->vocab_size;
  for (size_t t = 0; t < r->logits_frames; t++) {
    const float *row = lg + t * c;
    size_t best = 0;
    for (size_t k = 0; k < c; k++) {
      if (!isfinite(row[k]))
        return fail_stream(s, TFQ_STREAM_ERR_RUN, "%s: step %ld: the logits contain NaN or Inf",
                           r->path, s->steps);
      if (row[k] > row[best]) best = k;  /* the first maximum, as numpy.argmax */
    }
    if ((long)best != s->last && (long)best != r->blank && !append_text(s, r->vocab[best]))
      return fail_stream(s, TFQ_STREAM_ERR_MEMORY, "%s: out of memory for the transcript", r->path);
    s->last = (long)best;
  }
  s->n_pending = 0;  /* s stays resident: its next step reads its state where this one wrote it */
  return TFQ_OK;
}

static int usable(tfq_stream *s, const char *call) {
  if (s->failed) return TFQ_STREAM_ERR_STATE;  /* s->error keeps the failure */
  if (s->finished)
    return fail_stream(s, TFQ_STREAM_ERR_STATE, "%s after finish: create a new stream", call);
  return TFQ_OK;
}

int tfq_stream_accept(tfq_stream *s, const float *samples, size_t n) {
  if (!s) return TFQ_STREAM_ERR_ARGUMENT;
  int rc = usable(s, "accept");
  if (rc != TFQ_OK) return rc;
  if (n && !samples) return fail_stream(s, TFQ_STREAM_ERR_ARGUMENT, "accept: samples is NULL");
  for (size_t i = 0; i < n; i++)
    if (!isfinite(samples[i]))
      return fail_stream(s, TFQ_STREAM_ERR_ARGUMENT, "audio chunk contains NaN or Inf samples "
                         "(sample %zu); nothing was consumed", i);
  double t0 = now();
  tfq_recognizer *r = s->r;
  s->samples += (double)n;
  while (n > 0) {
    int got = 0;
    size_t take = tfq_frontend_feed_one(s->fe, samples, n,
                                        s->pending + (size_t)s->n_pending * (size_t)r->fp.n_mels, &got);
    samples += take;
    n -= take;
    s->n_pending += got;
    if (s->n_pending == r->chunk_frames && (rc = run_step(s)) != TFQ_OK) break;
  }
  s->compute += now() - t0;
  return rc;
}

const char *tfq_stream_partial(tfq_stream *s) { return s ? s->text : ""; }

int tfq_stream_finish(tfq_stream *s, const char **text) {
  if (!s) return TFQ_STREAM_ERR_ARGUMENT;
  if (text) *text = s->text;
  int rc = usable(s, "finish");
  if (rc != TFQ_OK) return rc;
  double t0 = now();
  s->finished = 1;
  tfq_recognizer *r = s->r;
  if (s->n_pending > 0) {
    size_t from = (size_t)s->n_pending * (size_t)r->fp.n_mels;
    size_t to = (size_t)r->chunk_frames * (size_t)r->fp.n_mels;
    for (size_t i = from; i < to; i++) s->pending[i] = r->pad_value;
    rc = run_step(s);
  }
  s->compute += now() - t0;
  if (text) *text = s->text;
  return rc;
}

const char *tfq_stream_error(const tfq_stream *s) { return s ? s->error : "no stream"; }
double tfq_stream_compute_seconds(const tfq_stream *s) { return s ? s->compute : 0.0; }
double tfq_stream_audio_seconds(const tfq_stream *s) {
  return s ? s->samples / (double)s->r->fp.sample_rate : 0.0;
}
long tfq_stream_steps(const tfq_stream *s) { return s ? s->steps : 0; }
