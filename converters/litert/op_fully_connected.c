/* TFQ_FULLY_CONNECTED, TFQ_DEPTHWISE_CONV_1D and TFQ_CONV_2D for LiteRT (the contracts are in
 * include/tfq/litert_op.h): look up x, the layer's blob and the output through the runtime's
 * tensor-buffer functions, check types, shapes, the blob's sections and byte sizes against its
 * header, then one tfq_linear_q8/_f32 call (or the depthwise loop over cached float taps) and
 * the fused activation. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/litert_op.h"

#define TFQ_MAX_INPUTS 3  /* x, blob and TFQ_CONV_2D's geometry */
#define TFQ_CHECKED_SLOTS 256  /* layers whose zero points were scanned once (per context) */
#define TFQ_REPACK_SLOTS 4096  /* layers with a column-interleaved copy (per context) */

/* A layer's weights copied by tfq_repack, keyed by the tensors they came from (constant
 * tensors keep their address for the life of the compiled model; a changed address makes a
 * new copy, and past TFQ_REPACK_SLOTS layers the rest run without one). */
typedef struct tfq_repack_key {
  const void *data, *scales, *zero_points;
  int32_t bits, symmetric, k, n, group_size, scale_is_f16;
  uint8_t sample[48];  /* the first 16 bytes of data, scales and zero points: a buffer freed
                          and another allocated at its address (tests) does not match */
} tfq_repack_key;

typedef struct tfq_repack_entry {
  tfq_repack_key key;
  void *copy;
  size_t bytes;
  int in_arena;  /* copy lies in an arena (freed with it), else its own allocation */
} tfq_repack_entry;

struct tfq_litert_context {
  tfq_litert_api api;
  pthread_mutex_t lock;
  int status;            /* first error since the last clear, TFQ_OK if none */
  int32_t layer;
  int32_t current_layer; /* layer of the call under way, once its params are read */
  char message[512];
  int64_t calls;
  void *workspace;       /* grow-only, 64-byte aligned */
  size_t workspace_bytes;
  /* Caches in first-use order; each *_hint is just past its last hit (see tfq_find). */
  tfq_repack_entry *checked;  /* layers whose zero points were scanned once (no copy) */
  size_t num_checked, checked_hint;
  tfq_repack_entry *repacks;  /* column-interleaved copies of weights, one per tensor */
  size_t num_repacks, repacks_hint;
  tfq_repack_entry *dequants; /* float copies of depthwise taps [taps][C], one per tensor */
  size_t num_dequants, dequants_hint;
  tfq_repack_entry *expanded; /* padded rows of dense (format version 2) data, one per tensor */
  size_t num_expanded, expanded_hint;
  void *expand_scratch;       /* padded rows for the call when the cache above is full */
  size_t expand_scratch_bytes;
  void *patches;              /* TFQ_CONV_2D's im2col rows (floats), grow-only */
  size_t patches_bytes;
  void *hidden;               /* a chained TFQ_FULLY_CONNECTED's first-layer output, grow-only */
  size_t hidden_bytes;
  tfq_arena *arenas;          /* where repacked copies live (tfq_arena_alloc, huge pages) */
  int repack_off;             /* TFQ_NO_REPACK set: run the packed weights as they are */
};

typedef struct tfq_tensor {
  tfq_lrt_buffer buffer;
  tfq_lrt_tensor_type type;
  size_t bytes;
  size_t count;  /* elements, from the dims */
  void *addr;
  int locked;
} tfq_tensor;

/* A blob's descriptor, read (litert_op.h): copies of its header and params, and where its
 * sections lie inside the tensor (NULL, 0 for a section the layer lacks). */
enum { TFQ_SEC_DATA, TFQ_SEC_SCALES, TFQ_SEC_ZERO_POINTS, TFQ_SEC_BIAS };
typedef struct tfq_blob {
  int32_t header[TFQ_HEADER_COUNT];
  int32_t params[TFQ_BLOB_PARAMS_MAX];
  const uint8_t *section[TFQ_BLOB_SECTION_COUNT];
  size_t bytes[TFQ_BLOB_SECTION_COUNT];
  const tfq_lrt_layout *layout;  /* the blob tensor's */
} tfq_blob;

static const char *const tfq_section_names[TFQ_BLOB_SECTION_COUNT] = {
    "data", "scales", "zero points", "bias"};

static void tfq_record(tfq_litert_context *ctx, int status, int32_t layer, const char *fmt, ...) {
  if (ctx->status != TFQ_OK) return;  /* keep the first error */
  ctx->status = status;
  ctx->layer = layer >= 0 ? layer : ctx->current_layer;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
  va_end(ap);
}

static int tfq_element_size(int32_t element_type) {
  switch (element_type) {
    case TFQ_LRT_ELEMENT_FLOAT32: case TFQ_LRT_ELEMENT_INT32: return 4;
    case TFQ_LRT_ELEMENT_FLOAT16: return 2;
    case TFQ_LRT_ELEMENT_UINT8: return 1;
    default: return 0;
  }
}

/* Element count of a layout; 0 with *ok = 0 on a negative dim, a rank over the maximum or an
 * overflow of size_t. */
static size_t tfq_layout_count(const tfq_lrt_layout *l, int *ok) {
  size_t count = 1;
  *ok = l->rank <= TFQ_LRT_MAX_RANK;
  for (unsigned r = 0; *ok && r < l->rank; r++) {
    int32_t d = l->dims[r];
    if (d < 0 || (d != 0 && count > SIZE_MAX / (size_t)d)) *ok = 0;
    else count *= (size_t)d;
  }
  return *ok ? count : 0;
}

static void tfq_shape_str(const tfq_lrt_layout *l, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (unsigned r = 0; r < l->rank && r < TFQ_LRT_MAX_RANK && used < size; r++)
    used += (size_t)snprintf(buf + used, size - used, r ? ", %d" : "%d", (int)l->dims[r]);
  if (used < size) snprintf(buf + used, size - used, "]");
}

/* Look up type, size and host address of one buffer; the element type must be `want` (or
 * `want2` if nonzero). */
static int tfq_open(tfq_litert_context *ctx, tfq_tensor *t, tfq_lrt_buffer buffer, int lock_mode,
                    const char *name, int32_t want, int32_t want2) {
  memset(t, 0, sizeof *t);
  t->buffer = buffer;
  if (!buffer) {
    tfq_record(ctx, TFQ_ERR_NULL, -1, "input %s: no tensor buffer", name);
    return 0;
  }
  if (ctx->api.get_tensor_type(buffer, &t->type) != TFQ_LRT_STATUS_OK ||
      ctx->api.get_packed_size(buffer, &t->bytes) != TFQ_LRT_STATUS_OK) {
    tfq_record(ctx, TFQ_ERR_NULL, -1, "tensor %s: the runtime gave no type or size", name);
    return 0;
  }
  int ok;
  t->count = tfq_layout_count(&t->type.layout, &ok);
  char shape[128];  /* formatted only for an error: snprintf per call cost ~1 us per op */
  if (!ok) {
    tfq_shape_str(&t->type.layout, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "tensor %s: invalid shape %s", name, shape);
    return 0;
  }
  if (t->type.element_type != want && (want2 == 0 || t->type.element_type != want2)) {
    tfq_record(ctx, TFQ_ERR_FORMAT, -1, "tensor %s: element type %d, expected %d", name,
               (int)t->type.element_type, (int)want);
    return 0;
  }
  size_t esize = (size_t)tfq_element_size(t->type.element_type);
  if (t->count > SIZE_MAX / esize || t->bytes < t->count * esize) {
    tfq_shape_str(&t->type.layout, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_BUFFER, -1, "tensor %s: %zu bytes hold less than shape %s", name,
               t->bytes, shape);
    return 0;
  }
  if (ctx->api.lock(buffer, &t->addr, lock_mode) != TFQ_LRT_STATUS_OK || !t->addr) {
    tfq_record(ctx, TFQ_ERR_NULL, -1, "tensor %s: cannot map the buffer to host memory", name);
    return 0;
  }
  t->locked = 1;
  return 1;
}

/* Swish, x / (1 + e^-x), in place, with e^z from a fixed sequence of float32 operations and
 * fmaf (one rounding, in every ISA: a vector FMA where the clone has one, the C library's
 * exact fmaf in the baseline build), so that every ISA, clone and vector width gives the same
 * bits.  The loop has no call and no branch, so GCC vectorizes it: 0.29 ns a value with
 * AVX-512 against 0.56 for the same arithmetic without FMA, and 4 ns for expf per element.
 * z = -x is clamped to [-87, 88] (e^z stays a normal float; beyond, swish is x or 0 to float
 * precision either way), split as n ln2 + r with n = round(z / ln2) (the 1.5 * 2^23 rounding
 * trick, whose bits then hold n) and ln2 in two parts; e^r by its Taylor series to r^6
 * (|r| <= ln2 / 2: 1.2e-7 relative truncation), times 2^n built in the exponent field.
 * Against float64 x * sigmoid(x): at most 3.7 ulp for x in [-80, 88] (every float below 1e-3
 * in magnitude tried, every 37th above; worst 3.63 near x = -10.7); below -80 it gives about
 * x e^-88 instead of x e^x, both under 1e-33 in magnitude.  NaN stays NaN. */
TFQ_FMA_CLONE
static void tfq_swish(float *y, size_t count) {
  const float magic = 12582912.0f;  /* 1.5 * 2^23 */
  for (size_t i = 0; i < count; i++) {
    float x = y[i], z = -x;
    z = z > 88.0f ? 88.0f : z;
    z = z < -87.0f ? -87.0f : z;
    float t = fmaf(z, 1.44269504f, magic);
    float n = t - magic;
    float r = fmaf(n, -0.693359375f, z);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = fmaf(r, 1.38888889e-3f, 8.33333333e-3f);
    p = fmaf(p, r, 4.16666667e-2f);
    p = fmaf(p, r, 1.66666667e-1f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    uint32_t tb, mb, eb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&mb, &magic, sizeof mb);
    eb = (tb - mb + 127u) << 23;  /* 2^n: n + 127 in the exponent field */
    float scale;
    memcpy(&scale, &eb, sizeof scale);
    y[i] = x / fmaf(p, scale, 1.0f);
  }
}

/* In place over the op's output (the subsampling convolutions' ReLU runs over 50 thousand
 * values a step): the AVX2 clone doubles the vector width; the clamps are exact in any width.
 * Swish has clones of its own (tfq_swish). */
TFQ_AVX2_CLONE
static void tfq_activate(float *y, size_t count, int act) {
  switch (act) {
    case TFQ_ACT_RELU:
      for (size_t i = 0; i < count; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
      break;
    case TFQ_ACT_RELU6:
      for (size_t i = 0; i < count; i++) y[i] = y[i] > 0.0f ? (y[i] < 6.0f ? y[i] : 6.0f) : 0.0f;
      break;
    case TFQ_ACT_RELU_N1_TO_1:
      for (size_t i = 0; i < count; i++) y[i] = y[i] > -1.0f ? (y[i] < 1.0f ? y[i] : 1.0f) : -1.0f;
      break;
    case TFQ_ACT_SWISH:
      tfq_swish(y, count);
      break;
    default:
      break;
  }
}

/* A grow-only, 64-byte aligned buffer of at least `bytes` (its old contents are not kept): 1, or
 * 0 if memory is short (the old buffer stays). */
static int tfq_grow(void **buf, size_t *buf_bytes, size_t bytes) {
  if (bytes <= *buf_bytes) return 1;
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded);
  if (!p) return 0;
  free(*buf);
  *buf = p;
  *buf_bytes = rounded;
  return 1;
}

static int tfq_workspace(tfq_litert_context *ctx, size_t bytes) {
  return tfq_grow(&ctx->workspace, &ctx->workspace_bytes, bytes);
}



/* The first (up to) 16 bytes of a buffer into out (zeros past its end). */
static void tfq_sample(uint8_t out[16], const void *p, size_t bytes) {
  memset(out, 0, 16);
  if (p) memcpy(out, p, bytes < 16 ? bytes : 16);
}

/* Is sample what tfq_sample makes of p?  Compared in place: copying the three samples of
 * every lookup into a buffer first was most of tfq_find's 1% of an xs step. */
static int tfq_sample_matches(const uint8_t sample[16], const void *p, size_t bytes) {
  size_t n = p ? (bytes < 16 ? bytes : 16) : 0;
  if (n == 16) {  /* the usual case, as two 8-byte words (a memcmp call here cost 0.6% of a step) */
    uint64_t a[2], b[2];
    memcpy(a, sample, 16);
    memcpy(b, p, 16);
    return a[0] == b[0] && a[1] == b[1];
  }
  if (n && memcmp(sample, p, n) != 0) return 0;
  for (size_t i = n; i < 16; i++)
    if (sample[i]) return 0;
  return 1;
}

static tfq_repack_key tfq_key_of(const tfq_packed_weights *w) {
  tfq_repack_key key;
  memset(&key, 0, sizeof key);
  key.data = w->data, key.scales = w->scales, key.zero_points = w->zero_points;
  key.bits = w->bits, key.symmetric = w->symmetric, key.k = w->k, key.n = w->n;
  key.group_size = w->group_size, key.scale_is_f16 = w->scale_is_f16;
  tfq_sample(key.sample, w->data, w->data_bytes);
  tfq_sample(key.sample + 16, w->scales, w->scales_bytes);
  tfq_sample(key.sample + 32, w->zero_points, w->zero_points_bytes);
  return key;
}

/* Does `key` describe w?  The cheap fields first; the samples only for an entry that has them
 * all (the one a call hits), so a lookup builds no key. */
static int tfq_key_matches(const tfq_repack_key *key, const tfq_packed_weights *w) {
  if (key->data != w->data || key->scales != w->scales || key->zero_points != w->zero_points ||
      key->bits != w->bits || key->symmetric != w->symmetric || key->k != w->k ||
      key->n != w->n || key->group_size != w->group_size || key->scale_is_f16 != w->scale_is_f16)
    return 0;
  return tfq_sample_matches(key->sample, w->data, w->data_bytes) &&
         tfq_sample_matches(key->sample + 16, w->scales, w->scales_bytes) &&
         tfq_sample_matches(key->sample + 32, w->zero_points, w->zero_points_bytes);
}

/* The cache entry of w's tensors, or NULL.  The scan starts just past the last hit: the ops of
 * a model run in the same order every step and the caches hold their layers in first-use
 * order, so the next call's entry is usually the first one looked at, not one of hundreds
 * (Conformer M spent 2% of a step in these scans). */
static tfq_repack_entry *tfq_find(tfq_repack_entry *e, size_t n, size_t *hint,
                                  const tfq_packed_weights *w) {
  for (size_t j = 0; j < n; j++) {
    size_t i = (*hint + j) % n;
    if (tfq_key_matches(&e[i].key, w)) {
      *hint = i + 1;
      return &e[i];
    }
  }
  return NULL;
}

/* Ask for the cache lines the next call's lookup compares (its entry is the one past this
 * call's, see tfq_find): the samples sit at the start of the file's weight tensors, which the
 * kernels, reading their own copies, never touch, so where the weights stream from memory
 * every lookup waited for three cache misses (1.6% of a Conformer M step).  Between two calls
 * of an op LiteRT runs others, which is time enough to bring them in.  A prefetch never faults,
 * whatever the pointer.  A macro: GCC judges a function that only prefetches free of effects
 * and drops the call. */
#define TFQ_PREFETCH_NEXT(e, n, hint)                    \
  do {                                                   \
    if ((e) && (n)) {                                    \
      const tfq_repack_key *key_ = &(e)[(hint) % (n)].key; \
      __builtin_prefetch(key_->data);                    \
      __builtin_prefetch(key_->scales);                  \
      __builtin_prefetch(key_->zero_points);             \
    }                                                    \
  } while (0)

static int tfq_zero_points_checked(tfq_litert_context *ctx, const tfq_packed_weights *w) {
  if (w->symmetric || tfq_find(ctx->checked, ctx->num_checked, &ctx->checked_hint, w))
    return TFQ_OK;
  int st = tfq_weights_check(w);
  if (st == TFQ_OK && ctx->num_checked < TFQ_CHECKED_SLOTS) {
    if (!ctx->checked)
      ctx->checked = (tfq_repack_entry *)calloc(TFQ_CHECKED_SLOTS, sizeof *ctx->checked);
    if (ctx->checked) ctx->checked[ctx->num_checked++].key = tfq_key_of(w);
  }
  return st;
}

/* Give w its column-interleaved copy where the kernels use one (made on first use). */
static void tfq_attach_repack(tfq_litert_context *ctx, tfq_packed_weights *w) {
  if (ctx->repack_off) return;
  const tfq_repack_entry *hit = tfq_find(ctx->repacks, ctx->num_repacks, &ctx->repacks_hint, w);
  if (hit) {  /* cached only where tfq_repacked_bytes was nonzero for these very fields */
    w->repacked = hit->copy, w->repacked_bytes = hit->bytes;
    return;
  }
  size_t bytes = tfq_repacked_bytes(w);
  if (bytes == 0 || ctx->num_repacks >= TFQ_REPACK_SLOTS) return;
  tfq_repack_key key = tfq_key_of(w);
  if (!ctx->repacks) {
    ctx->repacks = (tfq_repack_entry *)calloc(TFQ_REPACK_SLOTS, sizeof *ctx->repacks);
    if (!ctx->repacks) return;
  }
  int in_arena;
  void *copy = tfq_arena_alloc(&ctx->arenas, bytes, &in_arena);
  if (!copy) return;
  if (tfq_repack(w, copy, bytes) != TFQ_OK) {
    if (!in_arena) free(copy);  /* an arena's bytes stay used: no partial undo */
    return;
  }
  tfq_repack_entry *e = &ctx->repacks[ctx->num_repacks++];
  e->key = key, e->copy = copy, e->bytes = bytes, e->in_arena = in_arena;
  w->repacked = copy, w->repacked_bytes = bytes;
}

/* The padded rows (format version 1) of a layer whose file holds dense rows: a copy made on
 * first use and cached per tensor, or (cache full) rebuilt in a scratch buffer every call. */
static const uint8_t *tfq_expanded_rows(tfq_litert_context *ctx, const tfq_packed_weights *w,
                                        int32_t layer) {
  const tfq_repack_entry *hit = tfq_find(ctx->expanded, ctx->num_expanded, &ctx->expanded_hint, w);
  if (hit) return (const uint8_t *)hit->copy;
  tfq_repack_key key = tfq_key_of(w);
  size_t bytes = (size_t)w->n * tfq_row_bytes(w->k, w->bits);  /* n, k checked: no overflow */
  uint8_t *copy = NULL;
  if (ctx->num_expanded < TFQ_REPACK_SLOTS) {
    if (!ctx->expanded)
      ctx->expanded = (tfq_repack_entry *)calloc(TFQ_REPACK_SLOTS, sizeof *ctx->expanded);
    if (ctx->expanded) copy = (uint8_t *)aligned_alloc(64, (bytes + 63) / 64 * 64);
  }
  int cached = copy != NULL;
  if (!cached) {
    if (!tfq_grow(&ctx->expand_scratch, &ctx->expand_scratch_bytes, bytes)) {
      tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "cannot allocate %zu bytes for padded rows", bytes);
      return NULL;
    }
    copy = (uint8_t *)ctx->expand_scratch;
  }
  int st = tfq_expand_rows(w->data, w->data_bytes, w->k, w->n, w->bits, copy, bytes);
  if (st != TFQ_OK) {
    tfq_record(ctx, st, layer, "tfq_expand_rows: %s", tfq_status_str(st));
    if (cached) free(copy);
    return NULL;
  }
  if (cached) {
    tfq_repack_entry *e = &ctx->expanded[ctx->num_expanded++];
    e->key = key, e->copy = copy, e->bytes = bytes;
  }
  return copy;
}

/* Open input 1, the blob, into t and read its descriptor into *b: magic, version, reserved
 * words zero, every section 64-byte aligned, after the words, in order, not overlapping and
 * inside the tensor.  Returns 1, or 0 with the error recorded. */
static int tfq_open_blob(tfq_litert_context *ctx, tfq_tensor *t, tfq_lrt_buffer buffer,
                         tfq_blob *b, const char *name) {
  memset(b, 0, sizeof *b);
  if (!tfq_open(ctx, t, buffer, TFQ_LRT_LOCK_READ, name, TFQ_LRT_ELEMENT_UINT8, 0)) return 0;
  const size_t words_bytes = 4u * TFQ_BLOB_WORDS;
  if (t->count < words_bytes) {
    tfq_record(ctx, TFQ_ERR_FORMAT, -1, "%s: %zu bytes, less than its %zu-byte descriptor",
               name, t->count, words_bytes);
    return 0;
  }
  int32_t w[TFQ_BLOB_WORDS];
  memcpy(w, t->addr, sizeof w);  /* the tensor is 64-byte aligned, but memcpy needs no proof */
  if (w[0] != TFQ_BLOB_MAGIC || w[1] != TFQ_BLOB_VERSION) {
    tfq_record(ctx, TFQ_ERR_FORMAT, -1, "%s: magic 0x%08x, version %d; expected 0x%08x, "
               "version %d", name, (unsigned)w[0], (int)w[1], (unsigned)TFQ_BLOB_MAGIC,
               TFQ_BLOB_VERSION);
    return 0;
  }
  for (int i = TFQ_BLOB_SECTIONS + 2 * TFQ_BLOB_SECTION_COUNT; i < TFQ_BLOB_WORDS; i++)
    if (w[i] != 0) {
      tfq_record(ctx, TFQ_ERR_FORMAT, -1, "%s: reserved word %d is %d, not 0", name, i, (int)w[i]);
      return 0;
    }
  memcpy(b->header, w + TFQ_BLOB_HEADER, sizeof b->header);
  memcpy(b->params, w + TFQ_BLOB_PARAMS, sizeof b->params);
  size_t end = words_bytes;
  for (int s = 0; s < TFQ_BLOB_SECTION_COUNT; s++) {
    int32_t off = w[TFQ_BLOB_SECTIONS + 2 * s], len = w[TFQ_BLOB_SECTIONS + 2 * s + 1];
    if (off == 0 && len == 0) continue;
    if (off < 0 || len <= 0 || off % TFQ_BLOB_ALIGN != 0 || (size_t)off < end ||
        (size_t)off > t->count || (size_t)len > t->count - (size_t)off) {
      tfq_record(ctx, TFQ_ERR_BUFFER, -1, "%s: the %s section at offset %d with %d bytes is "
                 "not %d-byte aligned, overlaps what precedes it or ends past the blob's %zu "
                 "bytes", name, tfq_section_names[s], (int)off, (int)len, TFQ_BLOB_ALIGN, t->count);
      return 0;
    }
    b->section[s] = (const uint8_t *)t->addr + off;
    b->bytes[s] = (size_t)len;
    end = (size_t)off + (size_t)len;
  }
  b->layout = &t->type.layout;
  return 1;
}

/* The op's params, after the ones every op has (version, activation, flags, layer), must be 0
 * beyond `used` values: a value the op ignores is a file it does not understand. */
static int tfq_unused_params_zero(tfq_litert_context *ctx, const tfq_blob *b, int used,
                                  int32_t layer, const char *what) {
  for (int i = used; i < TFQ_BLOB_PARAMS_MAX; i++)
    if (b->params[i] != 0) {
      tfq_record(ctx, TFQ_ERR_FORMAT, layer, "%sparams: value %d is %d; this op reads %d values",
                 what, i, (int)b->params[i], used);
      return 0;
    }
  return 1;
}

/* *w from the blob's header and sections, each checked against the header (tfq_status,
 * recorded in ctx). */
static int tfq_weights_of_blob(tfq_litert_context *ctx, const tfq_blob *b, int32_t flags,
                               int32_t layer, tfq_packed_weights *w) {
  memset(w, 0, sizeof *w);
  /* Format version 2 keeps dense rows in the file: read its header as version 1's. */
  int dense = b->header[1] == TFQ_FORMAT_VERSION_DENSE;
  int32_t header[TFQ_HEADER_COUNT];
  memcpy(header, b->header, sizeof header);
  if (dense) header[1] = TFQ_FORMAT_VERSION;
  int st = tfq_weights_from_header(w, header, TFQ_HEADER_COUNT);
  if (st != TFQ_OK) {
    tfq_record(ctx, st, layer, "header: wrong magic or version");
    return st;
  }
  int has_zp = b->section[TFQ_SEC_ZERO_POINTS] != NULL;
  if ((w->bits != 4 && w->bits != 2) || (w->symmetric != 0 && w->symmetric != 1) ||
      (w->scale_is_f16 != 0 && w->scale_is_f16 != 1) || w->symmetric == has_zp) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "header: bits %d, symmetric %d, scale_is_f16 %d with "
               "%s zero-point section", (int)w->bits, (int)w->symmetric, (int)w->scale_is_f16,
               has_zp ? "a" : "no");
    return TFQ_ERR_FORMAT;
  }
  if (w->k < 1 || w->k > TFQ_MAX_K || w->n < 1 || w->n > TFQ_MAX_N || w->group_size < 1) {
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "header: K %d, N %d, G %d out of range", (int)w->k,
               (int)w->n, (int)w->group_size);
    return TFQ_ERR_SHAPE;
  }
  /* Each section's size from the header (64-bit: N * row bytes reaches 2^39). */
  uint64_t n = (uint64_t)w->n, groups = (uint64_t)tfq_num_groups(w->k, w->group_size);
  uint64_t row = dense ? tfq_row_bytes_dense(w->k, w->bits) : tfq_row_bytes(w->k, w->bits);
  uint64_t want[TFQ_BLOB_SECTION_COUNT] = {
      n * row, groups * n * (w->scale_is_f16 ? 2u : 4u), w->symmetric ? 0 : groups * n,
      (flags & TFQ_OP_FLAG_BIAS) ? 4 * n : 0};
  for (int s = 0; s < TFQ_BLOB_SECTION_COUNT; s++)
    if ((uint64_t)b->bytes[s] != want[s]) {
      tfq_record(ctx, TFQ_ERR_BUFFER, layer, "blob: the %s section has %zu bytes, the header "
                 "(K=%d, N=%d, G=%d, %d-bit%s) needs %llu", tfq_section_names[s], b->bytes[s],
                 (int)w->k, (int)w->n, (int)w->group_size, (int)w->bits,
                 s == TFQ_SEC_BIAS ? ((flags & TFQ_OP_FLAG_BIAS) ? ", bias" : ", no bias") : "",
                 (unsigned long long)want[s]);
      return TFQ_ERR_BUFFER;
    }
  w->data = b->section[TFQ_SEC_DATA];
  w->data_bytes = b->bytes[TFQ_SEC_DATA];
  w->scales = b->section[TFQ_SEC_SCALES];
  w->scales_bytes = b->bytes[TFQ_SEC_SCALES];
  w->zero_points = b->section[TFQ_SEC_ZERO_POINTS];
  w->zero_points_bytes = b->bytes[TFQ_SEC_ZERO_POINTS];
  if (flags & TFQ_OP_FLAG_BIAS) {
    w->bias = (const float *)(const void *)b->section[TFQ_SEC_BIAS];  /* 64-byte aligned */
    w->bias_count = (size_t)w->n;
  }
  /* The kernels (and the checks below) read padded rows; dense rows of a K that is a multiple
   * of 32 already are padded rows, and run from the file's memory without a copy. */
  if (dense && tfq_row_bytes_dense(w->k, w->bits) != tfq_row_bytes(w->k, w->bits)) {
    const uint8_t *rows = tfq_expanded_rows(ctx, w, layer);
    if (!rows) return ctx->status;
    w->data = rows;
    w->data_bytes = (size_t)w->n * tfq_row_bytes(w->k, w->bits);
  }
  st = tfq_zero_points_checked(ctx, w);
  if (st != TFQ_OK) {
    tfq_record(ctx, st, layer, "zero points outside 0..%d", (1 << w->bits) - 1);
    return st;
  }
  return TFQ_OK;
}

/* Fill *w from the blob's header and sections, each checked against the header, then open x
 * (t[0], float32; its shape is each op's to check).  Shared by the three ops; returns a
 * tfq_status, recorded in ctx. */
static int tfq_load_weights(tfq_litert_context *ctx, const tfq_lrt_buffer *inputs, tfq_tensor *t,
                            const tfq_blob *b, int32_t flags, int32_t layer,
                            tfq_packed_weights *w) {
  int st = tfq_weights_of_blob(ctx, b, flags, layer, w);
  if (st != TFQ_OK) return st;
  if (!tfq_open(ctx, &t[0], inputs[0], TFQ_LRT_LOCK_READ, "x", TFQ_LRT_ELEMENT_FLOAT32, 0))
    return ctx->status;
  return TFQ_OK;
}

/* The int8 path's workspace for m rows of w in ctx; 1, or 0 with the error recorded. */
static int tfq_q8_workspace(tfq_litert_context *ctx, const tfq_packed_weights *w, size_t m,
                            int32_t layer) {
  size_t ws = tfq_workspace_bytes(w, (int32_t)m);
  if (ws == 0 || !tfq_workspace(ctx, ws)) {
    tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "cannot allocate a workspace of %zu bytes", ws);
    return 0;
  }
  return 1;
}

/* y[m, N] = act(x[m, K] W + bias) on the path the flags choose (float or int8 activations);
 * with a geometry (int8 path only), x is a convolution's input and its m patches are the rows.
 * x_count and y_count are checked by the kernels.  Returns a tfq_status, recorded in ctx. */
/* static_scale: the calibrated activation scale with TFQ_OP_FLAG_STATIC_ACT (checked by the
 * caller), else unused. */
static int tfq_linear_call(tfq_litert_context *ctx, tfq_packed_weights *w, const float *x,
                           size_t x_count, size_t m, const tfq_conv_geometry *geo, float *y,
                           size_t y_count, int32_t flags, int32_t act, int32_t layer,
                           float static_scale) {
  int st;
  tfq_attach_repack(ctx, w);
  if (flags & TFQ_OP_FLAG_FLOAT_ACT) {
    st = tfq_linear_f32(TFQ_ISA_AUTO, w, x, x_count, (size_t)w->k, (int32_t)m, y, y_count,
                        (size_t)w->n);
    if (st != TFQ_OK) {
      tfq_record(ctx, st, layer, "tfq_linear_f32: %s", tfq_status_str(st));
      return st;
    }
  } else {
    if (!tfq_q8_workspace(ctx, w, m, layer)) return TFQ_ERR_WORKSPACE;
    int fixed = !geo && (flags & TFQ_OP_FLAG_STATIC_ACT);
    st = geo ? tfq_conv2d_q8(TFQ_ISA_AUTO, w, x, x_count, geo, y, y_count, ctx->workspace,
                             ctx->workspace_bytes)
         : fixed ? tfq_linear_q8_static(TFQ_ISA_AUTO, w, x, x_count, (size_t)w->k, (int32_t)m,
                                        static_scale, y, y_count, (size_t)w->n, ctx->workspace,
                                        ctx->workspace_bytes)
                 : tfq_linear_q8(TFQ_ISA_AUTO, w, x, x_count, (size_t)w->k, (int32_t)m, y, y_count,
                                 (size_t)w->n, ctx->workspace, ctx->workspace_bytes);
    if (st != TFQ_OK) {
      tfq_record(ctx, st, layer, "%s: %s",
                 geo ? "tfq_conv2d_q8" : fixed ? "tfq_linear_q8_static" : "tfq_linear_q8",
                 tfq_status_str(st));
      return st;
    }
  }
  tfq_activate(y, y_count, act);
  return TFQ_OK;
}

/* The counts every op checks first: one output, `want` inputs, non-NULL arrays.  `what`
 * prefixes the message ("" or "depthwise: ", ...). */
static int tfq_check_arity(tfq_litert_context *ctx, const char *what, size_t num_inputs, size_t want,
                           const tfq_lrt_buffer *inputs, size_t num_outputs,
                           const tfq_lrt_buffer *outputs) {
  if (num_outputs != 1 || !outputs) {
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "%sexpected 1 output, got %zu", what, num_outputs);
    return TFQ_ERR_SHAPE;
  }
  if (num_inputs != want) {
    /* Files written before the blob had one input per buffer (6 to 8). */
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "%sexpected %zu inputs (x, blob%s), got %zu", what, want,
               want == 3 ? ", geometry" : "", num_inputs);
    return TFQ_ERR_SHAPE;
  }
  if (!inputs) {
    tfq_record(ctx, TFQ_ERR_NULL, -1, "%sno input buffers", what);
    return TFQ_ERR_NULL;
  }
  return TFQ_OK;
}

/* The params every op has (as tfq_open_op below describes; also a chained call's second blob);
 * sets ctx->current_layer.  1, or 0 with the error recorded. */
static int tfq_check_params(tfq_litert_context *ctx, const char *what, const tfq_blob *b,
                            int32_t version, int used, int32_t allowed) {
  if (b->params[TFQ_OP_PARAM_VERSION] != version) {
    tfq_record(ctx, TFQ_ERR_FORMAT, -1, "%sparams: version %d, expected %d", what,
               (int)b->params[TFQ_OP_PARAM_VERSION], (int)version);
    return 0;
  }
  int32_t layer = b->params[TFQ_OP_PARAM_LAYER];
  ctx->current_layer = layer;
  if (!tfq_unused_params_zero(ctx, b, used, layer, what)) return 0;
  int32_t act = b->params[TFQ_OP_PARAM_ACTIVATION], flags = b->params[TFQ_OP_PARAM_FLAGS];
  if (act < 0 || act >= TFQ_ACT_COUNT || (flags & ~allowed)) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "%sparams: unknown activation %d or flags %d", what,
               (int)act, (int)flags);
    return 0;
  }
  return 1;
}

/* Output and blob of a call (output first, so that it can be filled with NaN whatever fails
 * later), then the params every op has: `version` and at most `used` values (the rest 0), the
 * layer index (from here on named in errors), an activation and no flag outside `allowed`.
 * Returns 1, or 0 with the error recorded. */
static int tfq_open_op(tfq_litert_context *ctx, const char *what, const tfq_lrt_buffer *inputs,
                       tfq_lrt_buffer *outputs, tfq_tensor *t, tfq_tensor *out, tfq_blob *b,
                       int32_t version, int used, int32_t allowed) {
  if (!tfq_open(ctx, out, outputs[0], TFQ_LRT_LOCK_WRITE, "output", TFQ_LRT_ELEMENT_FLOAT32, 0) ||
      !tfq_open_blob(ctx, &t[1], inputs[1], b, "blob"))
    return 0;
  return tfq_check_params(ctx, what, b, version, used, allowed);
}

/* The blob dims GetOutputLayouts read N from (TFQ_FULLY_CONNECTED, TFQ_CONV_2D): [N, rest], or
 * [1, N, rest] with TFQ_OP_FLAG_FLATTEN (an op that can_flatten).  Returns 1, or 0 with the
 * error recorded. */
static int tfq_blob_dims_hold_n(tfq_litert_context *ctx, const char *what, const tfq_blob *b,
                                int32_t n, int32_t flags, int can_flatten, int32_t layer) {
  const tfq_lrt_layout *bl = b->layout;
  int flatten = (flags & TFQ_OP_FLAG_FLATTEN) != 0;
  if (bl->rank == (flatten ? 3u : 2u) && bl->dims[bl->rank - 2] == n &&
      (!flatten || bl->dims[0] == 1))
    return 1;
  char shape[128];
  tfq_shape_str(bl, shape, sizeof shape);
  tfq_record(ctx, TFQ_ERR_FORMAT, layer, "%sblob has dims %s; N = %d%s needs [%s%d, rest]", what,
             shape, (int)n,
             !can_flatten ? "" : flatten ? " with the flatten flag" : " without the flatten flag",
             flatten ? "1, " : "", (int)n);
  return 0;
}

/* A chained call's second layer, from input 2: its blob opened and its params checked as any
 * op's (no flatten), its weights read, its K the first layer's output width k_in.  Errors name
 * it `what` ("second layer") and its blob `blob_name`, and the first layer `first` ("the first
 * layer") with its `k_in` as `first_gives` ("gives N").  Returns a tfq_status, recorded in ctx;
 * sets *layer2, *act2 and *flags2. */
static int tfq_open_chained(tfq_litert_context *ctx, const tfq_lrt_buffer *inputs, tfq_tensor *t,
                            const char *what, const char *blob_name, const char *first,
                            const char *first_gives, int32_t layer, int32_t k_in, tfq_blob *b,
                            tfq_packed_weights *w, int32_t *layer2, int32_t *act2,
                            int32_t *flags2) {
  char prefix[48];
  snprintf(prefix, sizeof prefix, "%s ", what);
  if (!tfq_open_blob(ctx, &t[2], inputs[2], b, blob_name) ||
      !tfq_check_params(ctx, prefix, b, TFQ_OP_PARAMS_VERSION, TFQ_OP_PARAMS_COUNT,
                        TFQ_OP_FLAG_BIAS | TFQ_OP_FLAG_FLOAT_ACT))
    return ctx->status;
  *layer2 = b->params[TFQ_OP_PARAM_LAYER];
  *act2 = b->params[TFQ_OP_PARAM_ACTIVATION], *flags2 = b->params[TFQ_OP_PARAM_FLAGS];
  int st = tfq_weights_of_blob(ctx, b, *flags2, *layer2, w);
  if (st != TFQ_OK) return st;
  if (!tfq_blob_dims_hold_n(ctx, prefix, b, w->n, *flags2, 0, *layer2)) return TFQ_ERR_FORMAT;
  if (w->k != k_in) {
    tfq_record(ctx, TFQ_ERR_SHAPE, *layer2, "%s: K = %d, but %s (#%d) %s = %d", what, (int)w->k,
               first, (int)layer, first_gives, (int)k_in);
    return TFQ_ERR_SHAPE;
  }
  return TFQ_OK;
}

/* The hidden activations of a chained call, [m][n1] floats, grow-only; NULL with the error
 * recorded. */
static float *tfq_hidden(tfq_litert_context *ctx, size_t m, int32_t n1, int32_t layer) {
  size_t count = m * (size_t)n1;  /* m <= TFQ_MAX_M, n1 <= TFQ_MAX_N: no overflow */
  if (!tfq_grow(&ctx->hidden, &ctx->hidden_bytes, count * sizeof(float))) {
    tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "cannot allocate %zu floats between the layers",
               count);
    return NULL;
  }
  return (float *)ctx->hidden;
}

/* The op body with ctx locked; returns a tfq_status (also recorded in ctx).  With a third input
 * the call runs two layers: the first blob's into a buffer of its own (its activation applied,
 * swish in a feed-forward block), then the second blob's from there into the output. */
static int tfq_run_locked(tfq_litert_context *ctx, size_t num_inputs, const tfq_lrt_buffer *inputs,
                          size_t num_outputs, tfq_lrt_buffer *outputs, tfq_tensor *t,
                          tfq_tensor *out) {
  int chained = num_inputs == 3;
  int st0 = tfq_check_arity(ctx, "", num_inputs, chained ? 3 : 2, inputs, num_outputs, outputs);
  if (st0 != TFQ_OK) return st0;
  tfq_blob blob;
  /* the scale param is read (and must be 0 without the flag) whatever the flags */
  if (!tfq_open_op(ctx, "", inputs, outputs, t, out, &blob, TFQ_OP_PARAMS_VERSION,
                   TFQ_OP_PARAM_STATIC_SCALE + 1,
                   TFQ_OP_FLAG_BIAS | TFQ_OP_FLAG_FLATTEN | TFQ_OP_FLAG_FLOAT_ACT | TFQ_OP_FLAG_STATIC_ACT))
    return ctx->status;
  int32_t layer = blob.params[TFQ_OP_PARAM_LAYER];
  int32_t act = blob.params[TFQ_OP_PARAM_ACTIVATION], flags = blob.params[TFQ_OP_PARAM_FLAGS];
  if (chained && (flags & TFQ_OP_FLAG_FLATTEN)) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "params: the flatten flag on the first of two chained "
               "layers");
    return TFQ_ERR_FORMAT;
  }
  float static_scale = 0.0f;
  int32_t scale_bits = blob.params[TFQ_OP_PARAM_STATIC_SCALE];
  memcpy(&static_scale, &scale_bits, sizeof static_scale);
  if (flags & TFQ_OP_FLAG_STATIC_ACT) {
    if (chained || (flags & TFQ_OP_FLAG_FLOAT_ACT) || !(static_scale > 0.0f) || !isfinite(static_scale)) {
      tfq_record(ctx, TFQ_ERR_FORMAT, layer, "params: a static activation scale %g (it must be finite "
                 "and positive, on one layer on the int8 path)", (double)static_scale);
      return TFQ_ERR_FORMAT;
    }
  } else if (scale_bits != 0) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "params: param %d is %d without the static flag",
               TFQ_OP_PARAM_STATIC_SCALE, (int)scale_bits);
    return TFQ_ERR_FORMAT;
  }
  tfq_packed_weights w;
  int st = tfq_load_weights(ctx, inputs, t, &blob, flags, layer, &w);
  if (st != TFQ_OK) return st;
  if (!tfq_blob_dims_hold_n(ctx, "", &blob, w.n, flags, 1, layer)) return TFQ_ERR_FORMAT;
  char shape[128];
  const tfq_lrt_layout *xl = &t[0].type.layout;
  if (xl->rank < 1 || xl->dims[xl->rank - 1] != w.k) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "x has shape %s, the header says K = %d", shape,
               (int)w.k);
    return TFQ_ERR_SHAPE;
  }
  size_t m = t[0].count / (size_t)w.k;
  if (m > TFQ_MAX_M) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "x has shape %s: M = %zu rows is too many", shape, m);
    return TFQ_ERR_SHAPE;
  }
  /* The second layer of a chained call: K = the first's N, no flatten. */
  tfq_blob blob2;
  tfq_packed_weights w2;
  int32_t layer2 = layer, act2 = act, flags2 = flags;
  if (chained) {
    st = tfq_open_chained(ctx, inputs, t, "second layer", "second blob", "the first layer",
                          "gives N", layer, w.n, &blob2, &w2, &layer2, &act2, &flags2);
    if (st != TFQ_OK) return st;
  }
  /* The output must be what GetOutputLayouts announced: x's shape with N (or [M, N]). */
  int32_t n_out = chained ? w2.n : w.n;
  const tfq_lrt_layout *ol = &out->type.layout;
  int out_ok = out->count == m * (size_t)n_out && ol->rank >= 1 && ol->dims[ol->rank - 1] == n_out;
  if (!out_ok) {
    char oshape[128];
    tfq_shape_str(ol, oshape, sizeof oshape);
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer2, "output has shape %s for x %s and N = %d", oshape,
               shape, (int)n_out);
    return TFQ_ERR_SHAPE;
  }
  if (m == 0) return TFQ_OK;
  if (!chained)
    return tfq_linear_call(ctx, &w, (const float *)t[0].addr, t[0].count, m, NULL,
                           (float *)out->addr, out->count, flags, act, layer, static_scale);
  float *hidden = tfq_hidden(ctx, m, w.n, layer);
  if (!hidden) return TFQ_ERR_WORKSPACE;
  size_t hidden_count = m * (size_t)w.n;
  ctx->current_layer = layer;
  st = tfq_linear_call(ctx, &w, (const float *)t[0].addr, t[0].count, m, NULL, hidden,
                       hidden_count, flags, act, layer, 0.0f);
  if (st != TFQ_OK) return st;
  ctx->current_layer = layer2;
  return tfq_linear_call(ctx, &w2, hidden, hidden_count, m, NULL, (float *)out->addr, out->count,
                         flags2, act2, layer2, 0.0f);
}

typedef int (*tfq_op_body)(tfq_litert_context *ctx, size_t num_inputs,
                           const tfq_lrt_buffer *inputs, size_t num_outputs,
                           tfq_lrt_buffer *outputs, tfq_tensor *t, tfq_tensor *out);

/* Both ops: lock the context, run the body, NaN-fill the output on failure, unlock buffers. */
static int tfq_op_call(tfq_op_body body, void *user_data, size_t num_inputs,
                       const tfq_lrt_buffer *inputs, size_t num_outputs, tfq_lrt_buffer *outputs) {
  tfq_litert_context *ctx = (tfq_litert_context *)user_data;
  if (!ctx) return TFQ_LRT_STATUS_INVALID_ARGUMENT;
  tfq_tensor t[TFQ_MAX_INPUTS], out;
  memset(t, 0, sizeof t);
  memset(&out, 0, sizeof out);
  pthread_mutex_lock(&ctx->lock);
  ctx->calls++;
  ctx->current_layer = -1;
  int st = body(ctx, num_inputs, inputs, num_outputs, outputs, t, &out);
  /* (checked holds the same layers' pointers as repacks and dequants) */
  TFQ_PREFETCH_NEXT(ctx->repacks, ctx->num_repacks, ctx->repacks_hint);
  TFQ_PREFETCH_NEXT(ctx->dequants, ctx->num_dequants, ctx->dequants_hint);
  TFQ_PREFETCH_NEXT(ctx->expanded, ctx->num_expanded, ctx->expanded_hint);
  if (st != TFQ_OK && out.locked)  /* never leave garbage that looks like a result */
    for (size_t i = 0; i < out.count; i++) ((float *)out.addr)[i] = NAN;
  for (int i = 0; i < TFQ_MAX_INPUTS; i++)
    if (t[i].locked) ctx->api.unlock(t[i].buffer);
  if (out.locked) ctx->api.unlock(out.buffer);
  pthread_mutex_unlock(&ctx->lock);
  return st == TFQ_OK ? TFQ_LRT_STATUS_OK : TFQ_LRT_STATUS_RUNTIME_FAILURE;
}

static int tfq_op_run(void *user_data, size_t num_inputs, const tfq_lrt_buffer *inputs,
                      size_t num_outputs, tfq_lrt_buffer *outputs) {
  return tfq_op_call(tfq_run_locked, user_data, num_inputs, inputs, num_outputs, outputs);
}

/* Output layout from the input layouts: x's dims with the last one N, or [M, N]; N and the
 * flatten choice are the blob's dims ([N, rest] or [1, N, rest]). */
static int tfq_op_output_layouts(void *user_data, size_t num_inputs, const tfq_lrt_layout *inputs,
                                 size_t num_outputs, tfq_lrt_layout *outputs) {
  tfq_litert_context *ctx = (tfq_litert_context *)user_data;
  if (!ctx) return TFQ_LRT_STATUS_INVALID_ARGUMENT;
  pthread_mutex_lock(&ctx->lock);
  ctx->current_layer = -1;  /* layouts come before any params are read: no layer to name */
  int st = TFQ_OK;
  if ((num_inputs != 2 && num_inputs != 3) || num_outputs != 1 || !inputs || !outputs) {
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "output layouts: %zu inputs and %zu outputs (expected x "
               "and blob, or x and two chained blobs, and 1 output)", num_inputs, num_outputs);
    st = TFQ_ERR_SHAPE;
  } else if (inputs[0].rank < 1 || inputs[0].rank > TFQ_LRT_MAX_RANK ||
             (inputs[1].rank != 2 && inputs[1].rank != 3) ||
             (num_inputs == 3 && (inputs[1].rank != 2 || inputs[2].rank != 2))) {
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "output layouts: x of rank %u, blob of rank %u%s",
               (unsigned)inputs[0].rank, (unsigned)inputs[1].rank,
               num_inputs == 3 ? " (chained blobs: rank 2 each)" : "");
    st = TFQ_ERR_SHAPE;
  } else {
    /* Chained: the second blob gives N; neither flattens (Run checks the rest). */
    const tfq_lrt_layout *x = &inputs[0], *last = &inputs[num_inputs - 1];
    int flatten = last->rank == 3;
    int32_t n = last->dims[last->rank - 2];
    tfq_lrt_layout o;
    memset(&o, 0, sizeof o);
    if (flatten) {
      int ok;
      size_t count = tfq_layout_count(x, &ok);
      int32_t k = x->dims[x->rank - 1];
      size_t m = (ok && k > 0) ? count / (size_t)k : 0;
      o.rank = 2;
      o.dims[0] = m > INT32_MAX ? -1 : (int32_t)m;
      o.dims[1] = n;
    } else {
      o.rank = x->rank;
      for (unsigned r = 0; r < x->rank; r++) o.dims[r] = x->dims[r];
      o.dims[x->rank - 1] = n;
    }
    outputs[0] = o;
  }
  pthread_mutex_unlock(&ctx->lock);
  return st == TFQ_OK ? TFQ_LRT_STATUS_OK : TFQ_LRT_STATUS_INVALID_ARGUMENT;
}

/* ---- TFQ_DEPTHWISE_CONV_1D (litert_op.h) --------------------------------------------------- */

/* W_out of a geometry, or -1 if it is not positive or overflows. */
static int64_t tfq_dw_out_width(int64_t w, int64_t taps, int64_t stride, int64_t dilation,
                                int64_t pad_left, int64_t pad_right) {
  int64_t span = dilation * (taps - 1) + 1, padded = w + pad_left + pad_right;
  if (padded < span) return -1;
  return (padded - span) / stride + 1;
}

/* The channel block that starts at channel c of c_count: 32 channels while 32 remain, then 8,
 * then 1 (tfq_dw_rows walks the channels in these blocks). */
static size_t tfq_dw_block(size_t c, size_t c_count) {
  return c_count - c >= 32 ? 32 : c_count - c >= 8 ? 8 : 1;
}

/* Taps [K][C] -> the layout tfq_dw_rows reads: block after block (tfq_dw_block), each block's
 * [K][cn] taps contiguous, so the block starting at channel c starts at c * K.  In [K][C] rows
 * C floats apart, a block's 32 taps fell into a few L1 sets whenever 4 C is a multiple of 1 KB
 * (Conformer M: C = 256) and kept evicting each other. */
static void tfq_dw_block_taps(const float *taps, float *blocked, int32_t k, size_t c_count) {
  for (size_t c0 = 0; c0 < c_count;) {
    size_t cn = tfq_dw_block(c0, c_count);
    float *dst = blocked + c0 * (size_t)k;
    for (int32_t j = 0; j < k; j++)
      memcpy(dst + (size_t)j * cn, taps + (size_t)j * c_count + c0, cn * sizeof(float));
    c0 += cn;
  }
}

/* The float taps of w in tfq_dw_block_taps's layout: a cached copy made on first use, or (cache
 * full) dequantized into the workspace on every call. */
static const float *tfq_dw_taps(tfq_litert_context *ctx, const tfq_packed_weights *w,
                                int32_t layer) {
  size_t count = (size_t)w->k * (size_t)w->n;
  const tfq_repack_entry *hit = tfq_find(ctx->dequants, ctx->num_dequants, &ctx->dequants_hint, w);
  if (hit) return (const float *)hit->copy;
  tfq_repack_key key = tfq_key_of(w);
  float *copy = NULL;
  if (ctx->num_dequants < TFQ_REPACK_SLOTS) {
    if (!ctx->dequants)
      ctx->dequants = (tfq_repack_entry *)calloc(TFQ_REPACK_SLOTS, sizeof *ctx->dequants);
    if (ctx->dequants) copy = (float *)malloc(count * sizeof(float));
  }
  int cached = copy != NULL;
  /* Dequantized as [K][N] into the workspace, then blocked into the copy (or, uncached, into
   * the workspace's first half). */
  if (!tfq_workspace(ctx, (cached ? 1 : 2) * count * sizeof(float))) {
    tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "cannot allocate %zu bytes for the taps",
               (cached ? 1 : 2) * count * sizeof(float));
    if (cached) free(copy);
    return NULL;
  }
  float *flat = (float *)ctx->workspace + (cached ? 0 : count);
  if (!cached) copy = (float *)ctx->workspace;
  int st = tfq_dequantize_f32(w, flat, count);
  if (st != TFQ_OK) {
    tfq_record(ctx, st, layer, "tfq_dequantize_f32: %s", tfq_status_str(st));
    if (cached) free(copy);
    return NULL;
  }
  tfq_dw_block_taps(flat, copy, w->k, (size_t)w->n);
  if (cached) {
    tfq_repack_entry *e = &ctx->dequants[ctx->num_dequants++];
    e->key = key, e->copy = copy, e->bytes = count * sizeof(float);
  }
  return copy;
}

/* The depthwise loop.  The sum per channel is 0 + tap 0 + tap 1 + ... + bias in that order on
 * every ISA (no FMA: -ffp-contract=off), so the AVX2 clone GCC adds on x86-64 Linux (picked at
 * load time by cpuid) gives the same bits as the baseline SSE2 one and as NEON.  Channels go in
 * blocks of 32, then 8, then one at a time, each block's sums in vector values (GCC vector
 * extensions) that the compiler keeps in registers over the taps: the array of 32 sums this
 * replaced lived on the stack, every add waiting for the store of the one before.  With the
 * blocked taps, Conformer M's 32 taps x 256 channels x 4 frames take 2.4 us a call instead of
 * 4.3 (5% of its step before), xs's 15 x 144 x 4 0.5 instead of 1.1. */
typedef float tfq_v8f __attribute__((vector_size(32)));

/* Output frame o of one row, channels [c0, c0 + 8 V): taps j0 .. j1-1 of input frames base + j dil. */
#define TFQ_DW_BLOCK_SUMS(V)                                                                  \
  do {                                                                                        \
    tfq_v8f acc[V];                                                                           \
    for (int v = 0; v < (V); v++) acc[v] = (tfq_v8f){0};                                      \
    for (int32_t j = j0; j < j1; j++) {                                                       \
      const float *xi = xr + (size_t)(base + (int64_t)j * dil) * c_count + c0;                \
      const float *wj = tb + (size_t)j * 8 * (V);                                             \
      for (int v = 0; v < (V); v++) {                                                         \
        tfq_v8f xv, wv;                                                                       \
        memcpy(&xv, xi + 8 * v, sizeof xv);                                                   \
        memcpy(&wv, wj + 8 * v, sizeof wv);                                                   \
        acc[v] = acc[v] + xv * wv;                                                            \
      }                                                                                       \
    }                                                                                         \
    for (int v = 0; bias && v < (V); v++) {                                                   \
      tfq_v8f bv;                                                                             \
      memcpy(&bv, bias + c0 + 8 * v, sizeof bv);                                              \
      acc[v] = acc[v] + bv;                                                                   \
    }                                                                                         \
    memcpy(yo + c0, acc, sizeof acc);                                                         \
  } while (0)

TFQ_AVX2_CLONE
static void tfq_dw_rows(const float *x, float *y, const float *taps, const float *bias,
                        size_t rows, int64_t width, int64_t out_w, size_t c_count, int32_t k,
                        int32_t stride, int32_t dil, int32_t pad_l) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * (size_t)width * c_count;
    /* Channel blocks outside, output frames inside, so that a block's taps stay in L1 over the
     * frames (the tap range of a frame is recomputed per block, which costs less: frames
     * outside took 2.7-3.2 us instead of 2.0-2.4 at Conformer M's shape, 6.3-6.7 instead of 4.7
     * at L's). */
    for (size_t c0 = 0; c0 < c_count;) {
      size_t cn = tfq_dw_block(c0, c_count);
      const float *tb = taps + c0 * (size_t)k;  /* the block's [K][cn] taps */
      for (int64_t o = 0; o < out_w; o++) {
        float *yo = y + (r * (size_t)out_w + (size_t)o) * c_count;
        /* Taps whose input index o*stride + j*dil - pad_l lies inside [0, width). */
        int64_t base = o * stride - pad_l;
        int32_t j0 = base >= 0 ? 0 : (int32_t)((-base + dil - 1) / dil);
        int64_t last = (width - 1 - base) / dil;
        int32_t j1 = base > width - 1 ? 0 : (int32_t)(last + 1 < k ? last + 1 : k);
        if (cn == 32) {
          TFQ_DW_BLOCK_SUMS(4);
        } else if (cn == 8) {
          TFQ_DW_BLOCK_SUMS(1);
        } else {
          float acc = 0.0f;
          for (int32_t j = j0; j < j1; j++)
            acc = acc + xr[(size_t)(base + (int64_t)j * dil) * c_count + c0] * tb[j];
          if (bias) acc = acc + bias[c0];
          yo[c0] = acc;
        }
      }
      c0 += cn;
    }
  }
}
#undef TFQ_DW_BLOCK_SUMS

/* With a third input (a pointwise layer's blob) the call also runs that layer over the
 * depthwise output, its activation applied (swish in a Conformer convolution module), kept in
 * the op's own buffer: y [B, H * W_out, N2] = pointwise(act(depthwise(x))). */
static int tfq_dw_run_locked(tfq_litert_context *ctx, size_t num_inputs,
                             const tfq_lrt_buffer *inputs, size_t num_outputs,
                             tfq_lrt_buffer *outputs, tfq_tensor *t, tfq_tensor *out) {
  int chained = num_inputs == 3;
  int st0 = tfq_check_arity(ctx, "depthwise: ", num_inputs, chained ? 3 : 2, inputs, num_outputs,
                            outputs);
  if (st0 != TFQ_OK) return st0;
  tfq_blob blob;
  if (!tfq_open_op(ctx, "depthwise ", inputs, outputs, t, out, &blob, TFQ_DW_PARAMS_VERSION,
                   TFQ_DW_PARAMS_COUNT, TFQ_OP_FLAG_BIAS))
    return ctx->status;
  const int32_t *params = blob.params;
  int32_t layer = params[TFQ_OP_PARAM_LAYER];
  int32_t act = params[TFQ_OP_PARAM_ACTIVATION], flags = params[TFQ_OP_PARAM_FLAGS];
  int32_t stride = params[TFQ_DW_PARAM_STRIDE], dil = params[TFQ_DW_PARAM_DILATION];
  int32_t pad_l = params[TFQ_DW_PARAM_PAD_LEFT], pad_r = params[TFQ_DW_PARAM_PAD_RIGHT];
  if (stride < 1 || stride > 1024 || dil < 1 || dil > 1024 || pad_l < 0 || pad_l > 65536 ||
      pad_r < 0 || pad_r > 65536) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "depthwise params: activation %d, flags %d, stride %d, "
               "dilation %d, padding %d/%d", (int)act, (int)flags, (int)stride, (int)dil,
               (int)pad_l, (int)pad_r);
    return TFQ_ERR_FORMAT;
  }
  const tfq_lrt_layout *bl = blob.layout;
  if (bl->rank != 2 || bl->dims[0] < 1) {
    char bshape[128];
    tfq_shape_str(bl, bshape, sizeof bshape);
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "depthwise: blob has dims %s, expected [W_out, rest]",
               bshape);
    return TFQ_ERR_FORMAT;
  }
  tfq_packed_weights w;
  int st = tfq_load_weights(ctx, inputs, t, &blob, flags, layer, &w);
  if (st != TFQ_OK) return st;
  const tfq_lrt_layout *xl = &t[0].type.layout, *ol = &out->type.layout;
  char shape[128], oshape[128];
  if (xl->rank != 4 || xl->dims[3] != w.n) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "depthwise: x has shape %s, expected [B, H, W, %d]",
               shape, (int)w.n);
    return TFQ_ERR_SHAPE;
  }
  int64_t width = xl->dims[2];
  int64_t out_w = tfq_dw_out_width(width, w.k, stride, dil, pad_l, pad_r);
  size_t rows = (size_t)xl->dims[0] * (size_t)xl->dims[1];
  /* The pointwise layer of a chained call: K = C, no flatten. */
  tfq_blob blob2;
  tfq_packed_weights w2;
  int32_t layer2 = layer, act2 = TFQ_ACT_NONE, flags2 = 0, n_out = w.n;
  if (chained) {
    st = tfq_open_chained(ctx, inputs, t, "pointwise layer", "pointwise blob",
                          "the depthwise layer", "has C", layer, w.n, &blob2, &w2, &layer2, &act2,
                          &flags2);
    if (st != TFQ_OK) return st;
    n_out = w2.n;
    ctx->current_layer = layer;
  }
  /* [B, H, W_out, C], or chained [B, H * W_out, N2] (the graph's reshape before the swish) */
  int out_ok = out_w == bl->dims[0] &&
               out->count == rows * (size_t)out_w * (size_t)n_out &&
               (chained ? ol->rank == 3 && ol->dims[0] == xl->dims[0] &&
                              ol->dims[1] == (int64_t)xl->dims[1] * out_w && ol->dims[2] == n_out
                        : ol->rank == 4 && ol->dims[0] == xl->dims[0] &&
                              ol->dims[1] == xl->dims[1] && ol->dims[2] == out_w &&
                              ol->dims[3] == w.n);
  if (!out_ok) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_shape_str(ol, oshape, sizeof oshape);
    tfq_record(ctx, TFQ_ERR_SHAPE, chained ? layer2 : layer, "depthwise: output %s for x %s, %d "
               "taps, stride %d, dilation %d, padding %d/%d (W_out %lld, the blob's first dim %d"
               "%s)", oshape, shape, (int)w.k, (int)stride, (int)dil, (int)pad_l, (int)pad_r,
               (long long)out_w, (int)bl->dims[0], chained ? ", then a pointwise layer" : "");
    return TFQ_ERR_SHAPE;
  }
  if (out->count == 0) return TFQ_OK;
  const float *taps = tfq_dw_taps(ctx, &w, layer);
  if (!taps) return ctx->status;
  const float *x = (const float *)t[0].addr;
  size_t c_count = (size_t)w.n, m = rows * (size_t)out_w;
  if (chained && m > TFQ_MAX_M) {
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "depthwise: %zu output rows for the pointwise layer, "
               "more than %d", m, (int)TFQ_MAX_M);
    return TFQ_ERR_SHAPE;
  }
  float *y = chained ? tfq_hidden(ctx, m, w.n, layer) : (float *)out->addr;
  if (!y) return TFQ_ERR_WORKSPACE;
  tfq_dw_rows(x, y, taps, w.bias, rows, width, out_w, c_count, w.k, stride, dil, pad_l);
  tfq_activate(y, m * c_count, act);
  if (!chained) return TFQ_OK;
  ctx->current_layer = layer2;
  return tfq_linear_call(ctx, &w2, y, m * c_count, m, NULL, (float *)out->addr, out->count,
                         flags2, act2, layer2, 0.0f);
}

static int tfq_dw_run(void *user_data, size_t num_inputs, const tfq_lrt_buffer *inputs,
                      size_t num_outputs, tfq_lrt_buffer *outputs) {
  return tfq_op_call(tfq_dw_run_locked, user_data, num_inputs, inputs, num_outputs, outputs);
}

/* [B, H, W_out, C]: W_out is the blob's first dim, C x's last. */
static int tfq_dw_output_layouts(void *user_data, size_t num_inputs, const tfq_lrt_layout *inputs,
                                 size_t num_outputs, tfq_lrt_layout *outputs) {
  tfq_litert_context *ctx = (tfq_litert_context *)user_data;
  if (!ctx) return TFQ_LRT_STATUS_INVALID_ARGUMENT;
  pthread_mutex_lock(&ctx->lock);
  ctx->current_layer = -1;  /* layouts come before any params are read: no layer to name */
  int st = TFQ_OK;
  if ((num_inputs != 2 && num_inputs != 3) || num_outputs != 1 || !inputs || !outputs ||
      inputs[0].rank != 4 || inputs[1].rank != 2 || (num_inputs == 3 && inputs[2].rank != 2)) {
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "depthwise output layouts: %zu inputs (expected x, blob "
               "and an optional pointwise blob), %zu outputs, x of rank %u, blob of rank %u",
               num_inputs, num_outputs, inputs && num_inputs ? (unsigned)inputs[0].rank : 0u,
               inputs && num_inputs > 1 ? (unsigned)inputs[1].rank : 0u);
    st = TFQ_ERR_SHAPE;
  } else {
    tfq_lrt_layout o;
    memset(&o, 0, sizeof o);
    o.dims[0] = inputs[0].dims[0];
    int64_t rows = (int64_t)inputs[0].dims[1] * (int64_t)inputs[1].dims[0];
    if (num_inputs == 3 && (rows < 0 || rows > INT32_MAX)) {  /* dims from the file */
      tfq_record(ctx, TFQ_ERR_SHAPE, -1, "depthwise output layouts: H %d x W_out %d rows",
                 (int)inputs[0].dims[1], (int)inputs[1].dims[0]);
      st = TFQ_ERR_SHAPE;
    } else if (num_inputs == 3) {  /* [B, H * W_out, N2] */
      o.rank = 3;
      o.dims[1] = (int32_t)rows;
      o.dims[2] = inputs[2].dims[0];
    } else {  /* [B, H, W_out, C] */
      o.rank = 4;
      o.dims[1] = inputs[0].dims[1];
      o.dims[2] = inputs[1].dims[0];
      o.dims[3] = inputs[0].dims[3];
    }
    outputs[0] = o;
  }
  pthread_mutex_unlock(&ctx->lock);
  return st == TFQ_OK ? TFQ_LRT_STATUS_OK : TFQ_LRT_STATUS_INVALID_ARGUMENT;
}

/* ---- TFQ_CONV_2D (litert_op.h) ------------------------------------------------------------ */

/* Output size of a VALID convolution along one axis, or -1 if the input is shorter than the
 * kernel. */
static int64_t tfq_conv_out(int64_t in, int64_t kernel, int64_t stride) {
  return in < kernel ? -1 : (in - kernel) / stride + 1;
}

/* n floats from src to dst.  The first subsampling convolution copies runs of 3 floats (a 3x3
 * kernel over one channel), 900 a step: a memcpy call each cost more than the copying. */
static inline void tfq_copy_floats(float *dst, const float *src, size_t n) {
  if (n > 8) {
    memcpy(dst, src, n * sizeof(float));
    return;
  }
  switch (n) {  /* fixed sizes: the compiler inlines each as moves */
    case 8: memcpy(dst, src, 8 * sizeof(float)); break;
    case 7: memcpy(dst, src, 7 * sizeof(float)); break;
    case 6: memcpy(dst, src, 6 * sizeof(float)); break;
    case 5: memcpy(dst, src, 5 * sizeof(float)); break;
    case 4: memcpy(dst, src, 4 * sizeof(float)); break;
    case 3: memcpy(dst, src, 3 * sizeof(float)); break;
    case 2: memcpy(dst, src, 2 * sizeof(float)); break;
    case 1: memcpy(dst, src, sizeof(float)); break;
    default: break;
  }
}

/* The im2col rows: row (b, oh, ow) holds, for each kernel row i, the kw*C contiguous floats
 * x[b, oh*sh + i, ow*sw .. ow*sw + kw - 1, :] -- (i, j, channel) order.  All indices are
 * inside x: oh*sh + i <= (Ho-1)*sh + kh-1 <= H-1, likewise along W. */
static void tfq_im2col(const float *x, float *rows, int64_t b_count, int64_t h, int64_t w,
                       int64_t c, int64_t ho, int64_t wo, int64_t kh, int64_t kw, int64_t sh,
                       int64_t sw) {
  size_t run = (size_t)(kw * c);
  float *dst = rows;
  for (int64_t b = 0; b < b_count; b++)
    for (int64_t oh = 0; oh < ho; oh++)
      for (int64_t ow = 0; ow < wo; ow++)
        for (int64_t i = 0; i < kh; i++, dst += run)
          tfq_copy_floats(dst, x + (size_t)(((b * h + oh * sh + i) * w + ow * sw) * c), run);
}

static int tfq_conv_run_locked(tfq_litert_context *ctx, size_t num_inputs,
                               const tfq_lrt_buffer *inputs, size_t num_outputs,
                               tfq_lrt_buffer *outputs, tfq_tensor *t, tfq_tensor *out) {
  int st0 = tfq_check_arity(ctx, "conv: ", num_inputs, 3, inputs, num_outputs, outputs);
  if (st0 != TFQ_OK) return st0;
  /* The geometry tensor: only its dims are used, so its type is looked up, never its bytes. */
  tfq_lrt_tensor_type geo;
  if (!inputs[2] || ctx->api.get_tensor_type(inputs[2], &geo) != TFQ_LRT_STATUS_OK) {
    tfq_record(ctx, TFQ_ERR_NULL, -1, "conv: no geometry tensor");
    return TFQ_ERR_NULL;
  }
  tfq_blob blob;
  if (!tfq_open_op(ctx, "conv ", inputs, outputs, t, out, &blob, TFQ_CONV_PARAMS_VERSION,
                   TFQ_CONV_PARAMS_COUNT, TFQ_OP_FLAG_BIAS | TFQ_OP_FLAG_FLOAT_ACT))
    return ctx->status;
  const int32_t *params = blob.params;
  int32_t layer = params[TFQ_OP_PARAM_LAYER];
  int32_t kh = params[TFQ_CONV_PARAM_KH], kw = params[TFQ_CONV_PARAM_KW];
  int32_t sh = params[TFQ_CONV_PARAM_SH], sw = params[TFQ_CONV_PARAM_SW];
  const tfq_lrt_layout *gl = &geo.layout;
  if (gl->rank != 4 || kh != gl->dims[0] || kw != gl->dims[1] || sh != gl->dims[2] ||
      sw != gl->dims[3] || kh < 1 || kw < 1 || sh < 1 || sw < 1 || kh > TFQ_CONV_MAX_KERNEL ||
      kw > TFQ_CONV_MAX_KERNEL || sh > TFQ_CONV_MAX_KERNEL || sw > TFQ_CONV_MAX_KERNEL) {
    tfq_record(ctx, TFQ_ERR_FORMAT, layer, "conv params: kernel %dx%d, strides %dx%d with a "
               "geometry tensor of rank %u [%d, %d, %d, %d]", (int)kh, (int)kw, (int)sh, (int)sw,
               (unsigned)gl->rank, (int)gl->dims[0], (int)gl->dims[1], (int)gl->dims[2],
               (int)gl->dims[3]);
    return TFQ_ERR_FORMAT;
  }
  int32_t act = params[TFQ_OP_PARAM_ACTIVATION], flags = params[TFQ_OP_PARAM_FLAGS];
  tfq_packed_weights w;
  int st = tfq_load_weights(ctx, inputs, t, &blob, flags, layer, &w);
  if (st != TFQ_OK) return st;
  if (!tfq_blob_dims_hold_n(ctx, "conv: ", &blob, w.n, flags, 0, layer)) return TFQ_ERR_FORMAT;
  const tfq_lrt_layout *xl = &t[0].type.layout, *ol = &out->type.layout;
  char shape[128], oshape[128];
  if (xl->rank != 4 || (int64_t)xl->dims[3] * kh * kw != w.k) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "conv: x has shape %s; a %dx%d kernel with K = %d "
               "needs [B, H, W, %d]", shape, (int)kh, (int)kw, (int)w.k, (int)(w.k / (kh * kw)));
    return TFQ_ERR_SHAPE;
  }
  int64_t b = xl->dims[0], h = xl->dims[1], wd = xl->dims[2], c = xl->dims[3];
  int64_t ho = tfq_conv_out(h, kh, sh), wo = tfq_conv_out(wd, kw, sw);
  /* rows = b * ho * wo, refused above TFQ_MAX_M without overflowing on the way */
  int rows_ok = ho > 0 && wo > 0 && b >= 0 && ho <= TFQ_MAX_M && wo <= TFQ_MAX_M &&
                (b == 0 || ho * wo <= TFQ_MAX_M / b);
  size_t m = rows_ok ? (size_t)(b * ho * wo) : 0;
  if (!rows_ok || ol->rank != 4 || ol->dims[0] != b ||
      ol->dims[1] != ho || ol->dims[2] != wo || ol->dims[3] != w.n ||
      out->count != m * (size_t)w.n) {
    tfq_shape_str(xl, shape, sizeof shape);
    tfq_shape_str(ol, oshape, sizeof oshape);
    tfq_record(ctx, TFQ_ERR_SHAPE, layer, "conv: output %s for x %s, kernel %dx%d, strides %dx%d "
               "(Ho %lld, Wo %lld, at most %d rows)", oshape, shape, (int)kh, (int)kw, (int)sh,
               (int)sw, (long long)ho, (long long)wo, (int)TFQ_MAX_M);
    return TFQ_ERR_SHAPE;
  }
  if (m == 0) return TFQ_OK;
  if (!(flags & TFQ_OP_FLAG_FLOAT_ACT)) {  /* int8 activations: each patch quantized in place */
    tfq_conv_geometry geo = {(int32_t)b, (int32_t)h, (int32_t)wd, (int32_t)c, kh, kw, sh, sw};
    return tfq_linear_call(ctx, &w, (const float *)t[0].addr, t[0].count, m, &geo,
                           (float *)out->addr, out->count, flags, act, layer, 0.0f);
  }
  /* Float activations: the im2col rows, then the float path. */
  if ((size_t)w.k > SIZE_MAX / sizeof(float) / m) {  /* 32-bit targets */
    tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "conv: %zu x %d patches do not fit in memory", m,
               (int)w.k);
    return TFQ_ERR_WORKSPACE;
  }
  size_t count = m * (size_t)w.k;
  if (!tfq_grow(&ctx->patches, &ctx->patches_bytes, count * sizeof(float))) {
    tfq_record(ctx, TFQ_ERR_WORKSPACE, layer, "cannot allocate %zu bytes for the patches",
               count * sizeof(float));
    return TFQ_ERR_WORKSPACE;
  }
  float *patches = (float *)ctx->patches;
  tfq_im2col((const float *)t[0].addr, patches, b, h, wd, c, ho, wo, kh, kw, sh, sw);
  return tfq_linear_call(ctx, &w, patches, count, m, NULL, (float *)out->addr, out->count,
                         flags, act, layer, 0.0f);
}

static int tfq_conv_run(void *user_data, size_t num_inputs, const tfq_lrt_buffer *inputs,
                        size_t num_outputs, tfq_lrt_buffer *outputs) {
  return tfq_op_call(tfq_conv_run_locked, user_data, num_inputs, inputs, num_outputs, outputs);
}

/* [B, Ho, Wo, N] from x [B, H, W, C], the geometry dims [kh, kw, sh, sw] and the blob's
 * [N, rest]. */
static int tfq_conv_output_layouts(void *user_data, size_t num_inputs,
                                   const tfq_lrt_layout *inputs, size_t num_outputs,
                                   tfq_lrt_layout *outputs) {
  tfq_litert_context *ctx = (tfq_litert_context *)user_data;
  if (!ctx) return TFQ_LRT_STATUS_INVALID_ARGUMENT;
  pthread_mutex_lock(&ctx->lock);
  ctx->current_layer = -1;  /* layouts come before any params are read: no layer to name */
  int st = TFQ_OK;
  const tfq_lrt_layout *gl = inputs && num_inputs == 3 ? &inputs[2] : NULL;
  if (num_inputs != 3 || num_outputs != 1 || !inputs || !outputs || inputs[0].rank != 4 ||
      inputs[1].rank != 2 || gl->rank != 4 || gl->dims[0] < 1 || gl->dims[1] < 1 ||
      gl->dims[2] < 1 || gl->dims[3] < 1) {
    tfq_record(ctx, TFQ_ERR_SHAPE, -1, "conv output layouts: %zu inputs (expected x, blob and "
               "geometry), %zu outputs, x of rank %u, geometry of rank %u", num_inputs,
               num_outputs, inputs && num_inputs ? (unsigned)inputs[0].rank : 0u,
               gl ? (unsigned)gl->rank : 0u);
    st = TFQ_ERR_SHAPE;
  } else {
    tfq_lrt_layout o;
    memset(&o, 0, sizeof o);
    o.rank = 4;
    o.dims[0] = inputs[0].dims[0];
    o.dims[1] = (int32_t)tfq_conv_out(inputs[0].dims[1], gl->dims[0], gl->dims[2]);
    o.dims[2] = (int32_t)tfq_conv_out(inputs[0].dims[2], gl->dims[1], gl->dims[3]);
    o.dims[3] = inputs[1].dims[0];
    outputs[0] = o;  /* a -1 (input shorter than the kernel) fails Run with a clear message */
  }
  pthread_mutex_unlock(&ctx->lock);
  return st == TFQ_OK ? TFQ_LRT_STATUS_OK : TFQ_LRT_STATUS_INVALID_ARGUMENT;
}

static int tfq_op_init(void *user_data, const void *init_data, size_t init_data_size) {
  (void)init_data;
  (void)init_data_size;
  return user_data ? TFQ_LRT_STATUS_OK : TFQ_LRT_STATUS_INVALID_ARGUMENT;
}

static int tfq_op_destroy(void *user_data) {
  (void)user_data;  /* the context belongs to the runner, which outlives the compiled model */
  return TFQ_LRT_STATUS_OK;
}

static const tfq_lrt_custom_kernel tfq_kernel_table = {
    tfq_op_init, tfq_op_output_layouts, tfq_op_run, tfq_op_destroy};

const tfq_lrt_custom_kernel *tfq_litert_kernel(void) { return &tfq_kernel_table; }

const char *tfq_litert_op_name(void) { return TFQ_OP_NAME; }

static const tfq_lrt_custom_kernel tfq_dw_kernel_table = {
    tfq_op_init, tfq_dw_output_layouts, tfq_dw_run, tfq_op_destroy};

const tfq_lrt_custom_kernel *tfq_litert_depthwise_kernel(void) { return &tfq_dw_kernel_table; }

const char *tfq_litert_depthwise_op_name(void) { return TFQ_DW_OP_NAME; }

static const tfq_lrt_custom_kernel tfq_conv_kernel_table = {
    tfq_op_init, tfq_conv_output_layouts, tfq_conv_run, tfq_op_destroy};

const tfq_lrt_custom_kernel *tfq_litert_conv_kernel(void) { return &tfq_conv_kernel_table; }

const char *tfq_litert_conv_op_name(void) { return TFQ_CONV_OP_NAME; }

tfq_litert_context *tfq_litert_context_create(const tfq_litert_api *api) {
  if (!api || !api->get_tensor_type || !api->get_packed_size || !api->lock || !api->unlock)
    return NULL;
  tfq_litert_context *ctx = (tfq_litert_context *)calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->api = *api;
  ctx->layer = -1;
  ctx->current_layer = -1;
  const char *off = getenv("TFQ_NO_REPACK");
  ctx->repack_off = off && off[0] && strcmp(off, "0") != 0;
  if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
    free(ctx);
    return NULL;
  }
  return ctx;
}

void tfq_litert_context_destroy(tfq_litert_context *ctx) {
  if (!ctx) return;
  pthread_mutex_destroy(&ctx->lock);
  for (size_t i = 0; i < ctx->num_repacks; i++)
    if (!ctx->repacks[i].in_arena) free(ctx->repacks[i].copy);
  free(ctx->repacks);
  tfq_arena_free_all(&ctx->arenas);
  for (size_t i = 0; i < ctx->num_dequants; i++) free(ctx->dequants[i].copy);
  free(ctx->dequants);
  for (size_t i = 0; i < ctx->num_expanded; i++) free(ctx->expanded[i].copy);
  free(ctx->expanded);
  free(ctx->checked);
  free(ctx->expand_scratch);
  free(ctx->patches);
  free(ctx->hidden);
  free(ctx->workspace);
  free(ctx);
}

int tfq_litert_error(const tfq_litert_context *ctx, char *message, size_t message_size,
                     int32_t *layer, int64_t *calls) {
  if (!ctx) return TFQ_ERR_NULL;
  tfq_litert_context *c = (tfq_litert_context *)ctx;
  pthread_mutex_lock(&c->lock);
  int st = c->status;
  if (message && message_size) snprintf(message, message_size, "%s", c->message);
  if (layer) *layer = c->layer;
  if (calls) *calls = c->calls;
  pthread_mutex_unlock(&c->lock);
  return st;
}

void tfq_litert_clear_error(tfq_litert_context *ctx) {
  if (!ctx) return;
  pthread_mutex_lock(&ctx->lock);
  ctx->status = TFQ_OK;
  ctx->layer = -1;
  ctx->message[0] = '\0';
  ctx->calls = 0;
  pthread_mutex_unlock(&ctx->lock);
}
