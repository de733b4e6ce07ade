/*
 * tfq_litert_op_test: the Run and GetOutputLayouts of TFQ_FULLY_CONNECTED, TFQ_DEPTHWISE_CONV_1D
 * and TFQ_CONV_2D without LiteRT.  Fake
 * tensor buffers (a type, a size and exactly that many bytes of malloc'ed memory, so that
 * AddressSanitizer catches any read past them) stand behind the tfq_litert_api table.
 * Checks: valid symmetric/asymmetric calls equal a direct tfq_linear_q8 call bit for bit (with
 * the fused activation applied), and with TFQ_OP_FLAG_FLOAT_ACT a direct tfq_linear_f32 call
 * (plain and flattened); every validation path records its error on both paths (first error
 * kept, output filled with NaN), unknown flag bits are refused, every lock is released, output
 * layouts.  Exit status 0 if all pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/litert_op.h"

typedef struct fake_buffer {
  tfq_lrt_tensor_type type;
  void *data;
  size_t bytes;
  int locks;
} fake_buffer;

static int fake_type(tfq_lrt_buffer b, tfq_lrt_tensor_type *t) {
  *t = ((fake_buffer *)b)->type;
  return 0;
}
static int fake_size(tfq_lrt_buffer b, size_t *s) {
  *s = ((fake_buffer *)b)->bytes;
  return 0;
}
static int fake_lock(tfq_lrt_buffer b, void **addr, int mode) {
  (void)mode;
  fake_buffer *f = (fake_buffer *)b;
  f->locks++;
  *addr = f->data;
  return 0;
}
static int fake_unlock(tfq_lrt_buffer b) {
  ((fake_buffer *)b)->locks--;
  return 0;
}

static int failures = 0, passes = 0;
static void check(int ok, const char *what) {
  if (ok) {
    passes++;
  } else {
    failures++;
    printf("FAIL %s\n", what);
  }
}

static fake_buffer *make(int32_t element_type, int rank, const int32_t *dims, size_t esize) {
  fake_buffer *f = (fake_buffer *)calloc(1, sizeof *f);
  f->type.element_type = element_type;
  f->type.layout.rank = (unsigned)rank;
  size_t count = 1;
  for (int r = 0; r < rank; r++) {
    f->type.layout.dims[r] = dims[r];
    count *= dims[r] > 0 ? (size_t)dims[r] : 0;
  }
  f->bytes = count * esize;
  f->data = malloc(f->bytes ? f->bytes : 1);
  memset(f->data, 0, f->bytes);
  return f;
}
static void release(fake_buffer *f) {
  if (!f) return;
  free(f->data);
  free(f);
}

static uint32_t rng = 12345u;
static uint32_t rnd(void) {
  rng = rng * 1664525u + 1013904223u;
  return rng >> 8;
}

enum { K = 70, N = 9, G = 32, M0 = 3, M1 = 5 };

typedef struct layer {
  fake_buffer *in[3];  /* x, blob, and TFQ_CONV_2D's geometry */
  size_t num_inputs;
  fake_buffer *out;
  int32_t *words;      /* the blob's descriptor (litert_op.h) */
  uint8_t *data, *zp;  /* the sections, as the direct kernel calls take them in w */
  float *scales, *bias;
  size_t data_bytes;
  tfq_packed_weights w;
} layer;

/* Flags every built layer gets on top of TFQ_OP_FLAG_BIAS (TFQ_OP_FLAG_FLOAT_ACT runs the
 * validation checks again on the float-activation path). */
static int32_t extra_flags = 0;

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

/* (Re)build L's blob from its sections and the header/params words it already has (or, on the
 * first call, hdr and params), with leading dims lead[0..rank-1]. */
static void set_blob(layer *L, const int32_t *hdr, const int32_t *params, int rank,
                     const int32_t *lead) {
  int32_t words[TFQ_BLOB_WORDS];
  if (L->words) memcpy(words, L->words, sizeof words);
  else memset(words, 0, sizeof words);
  words[0] = TFQ_BLOB_MAGIC, words[1] = TFQ_BLOB_VERSION;
  if (hdr) memcpy(words + TFQ_BLOB_HEADER, hdr, TFQ_HEADER_COUNT * sizeof(int32_t));
  if (params) memcpy(words + TFQ_BLOB_PARAMS, params, TFQ_BLOB_PARAMS_MAX * sizeof(int32_t));
  const int32_t *h = words + TFQ_BLOB_HEADER;  /* K, N, G at 4, 5, 6 (format.h) */
  int32_t groups = tfq_num_groups(h[4], h[6]), n = h[5];
  const void *src[4] = {L->data, L->scales, L->zp, L->bias};
  size_t len[4] = {L->data_bytes, (size_t)groups * n * 4, L->zp ? (size_t)groups * n : 0,
                   (size_t)n * 4};
  size_t pos = 4 * TFQ_BLOB_WORDS;
  for (int i = 0; i < 4; i++) {
    if (!len[i]) {
      words[TFQ_BLOB_SECTIONS + 2 * i] = words[TFQ_BLOB_SECTIONS + 2 * i + 1] = 0;
      continue;
    }
    pos = align64(pos);
    words[TFQ_BLOB_SECTIONS + 2 * i] = (int32_t)pos;
    words[TFQ_BLOB_SECTIONS + 2 * i + 1] = (int32_t)len[i];
    pos += len[i];
  }
  int32_t dims[TFQ_LRT_MAX_RANK];
  size_t lead_count = 1;
  for (int r = 0; r < rank; r++) dims[r] = lead[r], lead_count *= (size_t)lead[r];
  dims[rank] = (int32_t)((pos + lead_count - 1) / lead_count);
  release(L->in[1]);
  L->in[1] = make(TFQ_LRT_ELEMENT_UINT8, rank + 1, dims, 1);
  uint8_t *b = (uint8_t *)L->in[1]->data;
  memcpy(b, words, sizeof words);
  for (int i = 0; i < 4; i++)
    if (len[i]) memcpy(b + words[TFQ_BLOB_SECTIONS + 2 * i], src[i], len[i]);
  L->words = (int32_t *)L->in[1]->data;
}

/* A valid int4 layer of k inputs and n outputs (x [M0, M1, k]) with relu, bias, and zero
 * points when asymmetric. */
static void build_kn(layer *L, int symmetric, int32_t k, int32_t n) {
  memset(L, 0, sizeof *L);
  int32_t groups = tfq_num_groups(k, G), row = (int32_t)tfq_row_bytes(k, 4);
  int32_t dx[3] = {M0, M1, k}, dy[3] = {M0, M1, n};
  fake_buffer *x = make(TFQ_LRT_ELEMENT_FLOAT32, 3, dx, 4);
  L->out = make(TFQ_LRT_ELEMENT_FLOAT32, 3, dy, 4);
  L->data_bytes = (size_t)n * (size_t)row;
  L->data = (uint8_t *)malloc(L->data_bytes);
  L->scales = (float *)malloc(sizeof(float) * (size_t)groups * n);
  L->zp = symmetric ? NULL : (uint8_t *)malloc((size_t)groups * n);
  L->bias = (float *)malloc(sizeof(float) * n);
  for (size_t i = 0; i < x->bytes / 4; i++) ((float *)x->data)[i] = (float)(rnd() % 2001) / 100.0f - 10.0f;
  for (size_t i = 0; i < L->data_bytes; i++) L->data[i] = (uint8_t)rnd();
  for (int32_t c = 0; c < n; c++)  /* zero the padding nibbles k..k_pad-1 */
    for (int32_t j = k; j < tfq_k_pad(k); j++)
      L->data[c * row + j / 2] &= (uint8_t)(j % 2 ? 0x0F : 0xF0);
  for (int32_t i = 0; i < groups * n; i++) L->scales[i] = 0.001f * (float)(1 + rnd() % 100);
  if (L->zp) for (int32_t i = 0; i < groups * n; i++) L->zp[i] = (uint8_t)(rnd() % 16);
  for (int32_t c = 0; c < n; c++) L->bias[c] = (float)c - 4.0f;
  int32_t h[TFQ_HEADER_COUNT] = {TFQ_HEADER_MAGIC, TFQ_FORMAT_VERSION, 4, symmetric, k, n, G, 0};
  int32_t p[TFQ_BLOB_PARAMS_MAX] = {TFQ_OP_PARAMS_VERSION, TFQ_ACT_RELU, TFQ_OP_FLAG_BIAS | extra_flags, 7};
  int32_t lead[1] = {n};
  L->in[0] = x;
  set_blob(L, h, p, 1, lead);
  L->num_inputs = 2;
  tfq_packed_weights *w = &L->w;
  w->bits = 4, w->symmetric = symmetric, w->k = k, w->n = n, w->group_size = G;
  w->data = L->data, w->data_bytes = L->data_bytes;
  w->scales = L->scales, w->scales_bytes = sizeof(float) * (size_t)groups * n;
  if (L->zp) w->zero_points = L->zp, w->zero_points_bytes = (size_t)groups * n;
  w->bias = L->bias, w->bias_count = (size_t)n;
}

static void build(layer *L, int symmetric) { build_kn(L, symmetric, K, N); }

static void destroy(layer *L) {
  for (int i = 0; i < 3; i++) release(L->in[i]);
  release(L->out);
  free(L->data), free(L->scales), free(L->zp), free(L->bias);
}

static int32_t *header_of(layer *L) { return L->words + TFQ_BLOB_HEADER; }
static int32_t *params_of(layer *L) { return L->words + TFQ_BLOB_PARAMS; }
static int32_t *section_of(layer *L, int i) { return L->words + TFQ_BLOB_SECTIONS + 2 * i; }

/* Run op k on L's first num_inputs inputs; every lock must be released. */
static int run_op(const tfq_lrt_custom_kernel *k, tfq_litert_context *ctx, layer *L,
                  size_t num_inputs, const char *what) {
  tfq_lrt_buffer in[3], out[1] = {L->out};
  for (size_t i = 0; i < 3; i++) in[i] = L->in[i];
  tfq_litert_clear_error(ctx);
  k->run(ctx, num_inputs, in, 1, out);
  int balanced = L->out->locks == 0;
  for (size_t i = 0; i < 3; i++) balanced &= !L->in[i] || L->in[i]->locks == 0;
  check(balanced, what);
  return tfq_litert_error(ctx, NULL, 0, NULL, NULL);
}

static int run(tfq_litert_context *ctx, layer *L, size_t num_inputs) {
  return run_op(tfq_litert_kernel(), ctx, L, num_inputs, "every lock released");
}

static int all_nan(const fake_buffer *f) {
  for (size_t i = 0; i < f->bytes / 4; i++)
    if (!isnan(((const float *)f->data)[i])) return 0;
  return 1;
}

static void test_valid(tfq_litert_context *ctx, int symmetric) {
  layer L;
  build(&L, symmetric);
  int st = run(ctx, &L, L.num_inputs);
  check(st == TFQ_OK, symmetric ? "valid symmetric call" : "valid asymmetric call");
  int32_t m = M0 * M1;
  float *y = (float *)calloc((size_t)m * N, sizeof(float));
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
  st = tfq_linear_q8(TFQ_ISA_AUTO, &L.w, (const float *)L.in[0]->data, (size_t)m * K, K, m, y,
                     (size_t)m * N, N, ws, ws_bytes);
  check(st == TFQ_OK, "direct tfq_linear_q8");
  int same = 1, positive = 0;
  for (int32_t i = 0; i < m * N; i++) {
    float want = y[i] > 0.0f ? y[i] : 0.0f;
    float got = ((float *)L.out->data)[i];
    same &= memcmp(&want, &got, sizeof got) == 0;
    positive += got > 0.0f;
  }
  check(same && positive > 0, "op output equals tfq_linear_q8 + relu bit for bit");
  int32_t layer_index = 0;
  int64_t calls = 0;
  tfq_litert_error(ctx, NULL, 0, &layer_index, &calls);
  check(calls == 1 && layer_index == -1, "one call, no error layer");
  free(ws);
  free(y);
  destroy(&L);
}

/* TFQ_ACT_SWISH: the op's output against float64 y / (1 + e^-y) of tfq_linear_q8's y, within
 * 3.7 ulp, the bound of a sweep over [-80, 88] (op_fully_connected.c).  135 outputs: the
 * vectorized loop's full vectors and its scalar tail alike. */
static void test_valid_swish(tfq_litert_context *ctx) {
  layer L;
  build(&L, 0);
  params_of(&L)[TFQ_OP_PARAM_ACTIVATION] = TFQ_ACT_SWISH;
  int st = run(ctx, &L, L.num_inputs);
  check(st == TFQ_OK, "valid swish call");
  int32_t m = M0 * M1;
  float *y = (float *)calloc((size_t)m * N, sizeof(float));
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
  check(tfq_linear_q8(TFQ_ISA_AUTO, &L.w, (const float *)L.in[0]->data, (size_t)m * K, K, m, y,
                      (size_t)m * N, N, ws, ws_bytes) == TFQ_OK, "direct tfq_linear_q8 (swish)");
  double worst = 0.0;
  int negative = 0;
  for (int32_t i = 0; i < m * N; i++) {
    double want = (double)y[i] / (1.0 + exp(-(double)y[i]));
    float got = ((float *)L.out->data)[i];
    float wf = (float)want;
    double ulp = (double)nextafterf(fabsf(wf), INFINITY) - (double)fabsf(wf);
    double err = fabs((double)got - want) / ulp;
    if (err > worst) worst = err;
    negative += y[i] < 0.0f;
  }
  check(worst <= 3.7 && negative > 0, "op output equals the swish of tfq_linear_q8 within 3.7 ulp");
  free(ws);
  free(y);
  destroy(&L);
}

/* Format version 2: the same layer with dense rows (35 bytes for K = 70 int4, not 48) gives the
 * padded layer's output bit for bit; a dense data tensor of the padded width is refused. */
static void test_valid_dense(tfq_litert_context *ctx, int symmetric) {
  layer P, D;
  uint32_t seed = rng;
  build(&P, symmetric);
  rng = seed;
  build(&D, symmetric);
  size_t from = tfq_row_bytes(K, 4), to = tfq_row_bytes_dense(K, 4);
  uint8_t *dense = (uint8_t *)malloc((size_t)N * to);
  for (int32_t r = 0; r < N; r++) memcpy(dense + r * to, D.data + r * from, to);
  free(D.data);
  D.data = dense, D.data_bytes = (size_t)N * to;
  int32_t lead[1] = {N};
  header_of(&D)[1] = TFQ_FORMAT_VERSION_DENSE;
  set_blob(&D, NULL, NULL, 1, lead);
  int sp = run(ctx, &P, P.num_inputs), sd = run(ctx, &D, D.num_inputs);
  check(sp == TFQ_OK && sd == TFQ_OK && memcmp(P.out->data, D.out->data, P.out->bytes) == 0,
        "dense rows (format version 2) give the padded layer's output bit for bit");
  check(run(ctx, &D, D.num_inputs) == TFQ_OK && memcmp(P.out->data, D.out->data, P.out->bytes) == 0,
        "dense rows: the cached expansion gives the same output");
  header_of(&P)[1] = TFQ_FORMAT_VERSION_DENSE;  /* padded width, v2 */
  char msg[512];
  int st = run(ctx, &P, P.num_inputs);
  tfq_litert_error(ctx, msg, sizeof msg, NULL, NULL);
  check(st == TFQ_ERR_BUFFER && strstr(msg, "the data section has 432 bytes") && strstr(msg, "needs 315"),
        "dense header with padded rows refused");
  destroy(&P);
  destroy(&D);
}

/* TFQ_OP_FLAG_FLOAT_ACT: the op equals tfq_linear_f32 + relu bit for bit (and not the int8
 * path), with [M0, M1, N] and flattened [M0*M1, N] outputs. */
static void test_valid_float(tfq_litert_context *ctx, int symmetric, int flatten) {
  layer L;
  build(&L, symmetric);
  params_of(&L)[TFQ_OP_PARAM_FLAGS] |= TFQ_OP_FLAG_FLOAT_ACT;
  int32_t m = M0 * M1;
  if (flatten) {
    int32_t lead[2] = {1, N};
    params_of(&L)[TFQ_OP_PARAM_FLAGS] |= TFQ_OP_FLAG_FLATTEN;
    set_blob(&L, NULL, NULL, 2, lead);
    L.out->type.layout.rank = 2, L.out->type.layout.dims[0] = m, L.out->type.layout.dims[1] = N;
  }
  int st = run(ctx, &L, L.num_inputs);
  check(st == TFQ_OK, flatten ? "valid float-activation call, flattened" : "valid float-activation call");
  float *y = (float *)calloc((size_t)m * N, sizeof(float));
  float *y8 = (float *)calloc((size_t)m * N, sizeof(float));
  /* The op runs the weights' column-interleaved copy where the CPU has a kernel for it (a
   * float sum in another order): the direct call gets one too. */
  tfq_packed_weights wr = L.w;
  size_t rb = tfq_repacked_bytes(&wr);
  void *copy = rb ? malloc(rb) : NULL;
  if (copy && tfq_repack(&wr, copy, rb) == TFQ_OK) wr.repacked = copy, wr.repacked_bytes = rb;
  st = tfq_linear_f32(TFQ_ISA_AUTO, &wr, (const float *)L.in[0]->data, (size_t)m * K, K, m, y,
                      (size_t)m * N, N);
  check(st == TFQ_OK, "direct tfq_linear_f32");
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
  st = tfq_linear_q8(TFQ_ISA_AUTO, &L.w, (const float *)L.in[0]->data, (size_t)m * K, K, m, y8,
                     (size_t)m * N, N, ws, ws_bytes);
  check(st == TFQ_OK, "direct tfq_linear_q8");
  int same = 1, positive = 0, differs_from_q8 = 0;
  for (int32_t i = 0; i < m * N; i++) {
    float want = y[i] > 0.0f ? y[i] : 0.0f, want8 = y8[i] > 0.0f ? y8[i] : 0.0f;
    float got = ((float *)L.out->data)[i];
    same &= memcmp(&want, &got, sizeof got) == 0;
    differs_from_q8 += memcmp(&want8, &got, sizeof got) != 0;
    positive += got > 0.0f;
  }
  check(same && positive > 0, "float-activation op output equals tfq_linear_f32 + relu bit for bit");
  check(differs_from_q8 > 0, "float-activation op output is not the int8 path's");
  free(copy);
  free(ws);
  free(y8);
  free(y);
  destroy(&L);
}

/* Break one thing, run, expect `status` and a message containing `needle`. */
typedef void (*breaker)(layer *L);
static void expect_error(tfq_litert_context *ctx, int symmetric, breaker brk, size_t drop,
                         int status, const char *needle, const char *what) {
  layer L;
  build(&L, symmetric);
  brk(&L);
  int st = run(ctx, &L, L.num_inputs - drop);
  char msg[512];
  int32_t layer_index = -2;
  tfq_litert_error(ctx, msg, sizeof msg, &layer_index, NULL);
  int ok = st == status && strstr(msg, needle) != NULL;
  if (!ok) printf("  %s: status %d (want %d), message \"%s\"\n", what, st, status, msg);
  check(ok, what);
  if (status != TFQ_ERR_SHAPE || strstr(needle, "output") == NULL)
    check(drop || L.out->type.element_type != TFQ_LRT_ELEMENT_FLOAT32 || all_nan(L.out) ||
              layer_index == -1, "output filled with NaN");
  destroy(&L);
}

static void header_k(layer *L) { header_of(L)[4] = K + 40; }
static void header_k_same_row(layer *L) { header_of(L)[4] = K + 5; }
static void header_magic(layer *L) { header_of(L)[0] = 0; }
static void header_n_huge(layer *L) { header_of(L)[5] = 1 << 30; }
static void header_g_zero(layer *L) { header_of(L)[6] = 0; }
static void header_bits(layer *L) { header_of(L)[2] = 3; }
static void header_f16(layer *L) { header_of(L)[7] = 1; }
static void header_sym_flip(layer *L) { header_of(L)[3] ^= 1; }
static void x_wrong_k(layer *L) { L->in[0]->type.layout.dims[2] = K - 1; }
static void x_short(layer *L) { L->in[0]->bytes -= 4; }
static void x_negative(layer *L) { L->in[0]->type.layout.dims[0] = -1; }
static void data_short(layer *L) { section_of(L, 0)[1] -= (int32_t)tfq_row_bytes(K, 4); }
static void scales_misaligned(layer *L) { section_of(L, 1)[0] += 4; }
static void scales_overlap(layer *L) { section_of(L, 1)[0] = section_of(L, 0)[0]; }
static void bias_past_end(layer *L) { section_of(L, 3)[0] += 64 * 64; }
static void blob_magic(layer *L) { L->words[0] = 7; }
static void blob_reserved(layer *L) { L->words[TFQ_BLOB_WORDS - 1] = 1; }
static void blob_short(layer *L) { L->in[1]->type.layout.dims[1] = 100 / N; L->in[1]->bytes = 100; }
static void blob_type(layer *L) { L->in[1]->type.element_type = TFQ_LRT_ELEMENT_INT32; }
static void blob_rows(layer *L) { L->in[1]->type.layout.dims[0] = 1; L->in[1]->type.layout.dims[1] *= N; }
static void out_wrong(layer *L) { L->out->type.layout.dims[0] = 1; }
static void params_version(layer *L) { params_of(L)[0] = 9; }
static void params_act(layer *L) { params_of(L)[1] = 99; }
static void params_unknown_flag(layer *L) { params_of(L)[2] |= 16; }
/* TFQ_OP_FLAG_STATIC_ACT with a scale of 0 (the param left as it was), and a scale without it */
static void params_static_no_scale(layer *L) { params_of(L)[2] |= TFQ_OP_FLAG_STATIC_ACT; }
static void params_scale_no_flag(layer *L) { params_of(L)[TFQ_OP_PARAM_STATIC_SCALE] = 5; }
static void params_flatten(layer *L) { params_of(L)[2] |= TFQ_OP_FLAG_FLATTEN; }
static void params_unused(layer *L) { params_of(L)[6] = 1; }
static void bias_short(layer *L) { section_of(L, 3)[1] -= 4; }
static void bias_flag_off(layer *L) { params_of(L)[2] &= ~TFQ_OP_FLAG_BIAS; }
static void zp_out_of_range(layer *L) {
  ((uint8_t *)L->in[1]->data)[section_of(L, 2)[0] + 3] = 16;
}
static void nothing(layer *L) { (void)L; }

static void test_output_layouts(tfq_litert_context *ctx) {
  const tfq_lrt_custom_kernel *k = tfq_litert_kernel();
  tfq_lrt_layout in[6], out[1];
  memset(in, 0, sizeof in);
  in[0].rank = 3, in[0].dims[0] = 2, in[0].dims[1] = 5, in[0].dims[2] = K;
  in[1].rank = 2, in[1].dims[0] = N, in[1].dims[1] = 80;  /* blob [N, rest] */
  tfq_litert_clear_error(ctx);
  k->get_output_layouts(ctx, 2, in, 1, out);
  check(out[0].rank == 3 && out[0].dims[0] == 2 && out[0].dims[1] == 5 && out[0].dims[2] == N,
        "output layout [2, 5, N]");
  in[1].rank = 3, in[1].dims[0] = 1, in[1].dims[1] = N, in[1].dims[2] = 80;  /* [1, N, rest] */
  k->get_output_layouts(ctx, 2, in, 1, out);
  check(out[0].rank == 2 && out[0].dims[0] == 10 && out[0].dims[1] == N, "flattened layout [10, N]");
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_OK, "no layout error");
  k->get_output_layouts(ctx, 6, in, 1, out);  /* a file from before the blob */
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE, "layouts: wrong input count");
  tfq_litert_clear_error(ctx);
  in[1].rank = 1;
  k->get_output_layouts(ctx, 2, in, 1, out);
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE, "layouts: blob of rank 1");
}

/* ---- TFQ_DEPTHWISE_CONV_1D: the FC layer's weights as K = 70 taps over N = 9 channels ---- */
enum { DW_W = 80 };

/* The layer of build() with a 4-D x of dims dx (new random values) and an output of dims dy. */
static void reshape_4d(layer *L, const int32_t *dx, const int32_t *dy) {
  release(L->in[0]);
  release(L->out);
  L->in[0] = make(TFQ_LRT_ELEMENT_FLOAT32, 4, dx, 4);
  for (size_t i = 0; i < L->in[0]->bytes / 4; i++)
    ((float *)L->in[0]->data)[i] = (float)(rnd() % 2001) / 100.0f - 10.0f;
  L->out = make(TFQ_LRT_ELEMENT_FLOAT32, 4, dy, 4);
}

/* The layer of build() turned into a depthwise op: x [1, 1, DW_W, N], blob [W_out, rest]. */
static void build_dw(layer *L, int symmetric, int32_t stride, int32_t dil, int32_t pad_l,
                     int32_t pad_r) {
  build(L, symmetric);
  int32_t w_out = (DW_W + pad_l + pad_r - dil * (K - 1) - 1) / stride + 1;
  int32_t dx[4] = {1, 1, DW_W, N}, dy[4] = {1, 1, w_out, N}, lead[1] = {w_out};
  reshape_4d(L, dx, dy);
  int32_t p[TFQ_BLOB_PARAMS_MAX] = {TFQ_DW_PARAMS_VERSION, TFQ_ACT_NONE, TFQ_OP_FLAG_BIAS, 7,
                                    stride, dil, pad_l, pad_r};
  set_blob(L, NULL, p, 1, lead);
}

static int run_dw(tfq_litert_context *ctx, layer *L) {
  return run_op(tfq_litert_depthwise_kernel(), ctx, L, L->num_inputs, "depthwise: every lock released");
}

static void test_dw_valid(tfq_litert_context *ctx, int symmetric, int32_t stride, int32_t dil,
                          int32_t pad_l, int32_t pad_r) {
  layer L;
  build_dw(&L, symmetric, stride, dil, pad_l, pad_r);
  int st = run_dw(ctx, &L);
  float *taps = malloc(sizeof(float) * K * N);
  check(st == TFQ_OK && tfq_dequantize_f32(&L.w, taps, (size_t)K * N) == TFQ_OK, "depthwise runs");
  const float *x = (const float *)L.in[0]->data, *y = (const float *)L.out->data;
  int32_t w_out = L.out->type.layout.dims[2];
  int same = 1;
  for (int32_t o = 0; o < w_out; o++)
    for (int32_t c = 0; c < N; c++) {
      float acc = 0.0f;
      for (int32_t j = 0; j < K; j++) {
        int32_t i = o * stride + j * dil - pad_l;
        if (i >= 0 && i < DW_W) acc = acc + x[i * N + c] * taps[j * N + c];
      }
      acc = acc + L.w.bias[c];
      same &= memcmp(&acc, &y[o * N + c], sizeof acc) == 0;
    }
  check(same, "depthwise equals the plain loop over the dequantized taps");
  free(taps);
  destroy(&L);
}

static void expect_dw_error(tfq_litert_context *ctx, void (*brk)(layer *), int status,
                            const char *needle, const char *what) {
  layer L;
  build_dw(&L, 0, 1, 1, 0, 0);
  brk(&L);
  int st = run_dw(ctx, &L);
  char msg[512];
  tfq_litert_error(ctx, msg, sizeof msg, NULL, NULL);
  int ok = st == status && strstr(msg, needle) != NULL;
  if (!ok) printf("  %s: status %d (want %d), message \"%s\"\n", what, st, status, msg);
  check(ok, what);
  destroy(&L);
}

static void dw_x_short(layer *L) { L->in[0]->bytes -= 4; }
static void dw_x_channels(layer *L) { L->in[0]->type.layout.dims[3] = N + 1; }
static void dw_x_rank(layer *L) { L->in[0]->type.layout.rank = 3; }
static void dw_out_width(layer *L) { L->out->type.layout.dims[2] -= 1; }
static void dw_blob_rows(layer *L) {  /* the same bytes as [1, W_out * rest] */
  L->in[1]->type.layout.dims[1] *= L->in[1]->type.layout.dims[0];
  L->in[1]->type.layout.dims[0] = 1;
}
static void dw_stride_zero(layer *L) { params_of(L)[4] = 0; }
static void dw_pad_huge(layer *L) { params_of(L)[7] = 1 << 20; }
static void dw_blob_rank(layer *L) { L->in[1]->type.layout.rank = 1; L->in[1]->type.layout.dims[0] *= L->in[1]->type.layout.dims[1]; }
static void dw_taps_long(layer *L) { header_of(L)[4] = DW_W + 1; }
static void dw_flatten(layer *L) { params_of(L)[2] |= TFQ_OP_FLAG_FLATTEN; }

/* A depthwise call with a pointwise blob (K = C = N, N2 = 5): equals the depthwise op with
 * swish, then the fully connected op over its output, bit for bit; a pointwise layer whose K
 * is not C, and an output not [B, H * W_out, N2], are refused; the layouts. */
enum { PW_N = 5, PW_W = 11 };  /* PW_W: W_out of build_dw(.., 1, 1, 0, 0) */

static void test_dw_chain(tfq_litert_context *ctx) {
  layer D, P;
  build_dw(&D, 0, 1, 1, 0, 0);
  params_of(&D)[TFQ_OP_PARAM_ACTIVATION] = TFQ_ACT_SWISH;
  build_kn(&P, 1, N, PW_N);
  params_of(&P)[TFQ_OP_PARAM_LAYER] = 8;
  check(run_dw(ctx, &D) == TFQ_OK, "depthwise with swish runs");
  int32_t dx[3] = {1, PW_W, N}, dy[3] = {1, PW_W, PW_N};
  release(P.in[0]);
  release(P.out);
  P.in[0] = make(TFQ_LRT_ELEMENT_FLOAT32, 3, dx, 4);
  P.out = make(TFQ_LRT_ELEMENT_FLOAT32, 3, dy, 4);
  memcpy(P.in[0]->data, D.out->data, P.in[0]->bytes);
  check(run(ctx, &P, 2) == TFQ_OK, "pointwise over the depthwise output runs");
  release(D.out);
  D.out = make(TFQ_LRT_ELEMENT_FLOAT32, 3, dy, 4);
  D.in[2] = P.in[1];
  D.num_inputs = 3;
  int st = run_dw(ctx, &D);
  check(st == TFQ_OK && memcmp(D.out->data, P.out->data, P.out->bytes) == 0,
        "chained depthwise + pointwise equals the two calls bit for bit");
  char msg[512];
  D.out->type.layout.rank = 4, D.out->type.layout.dims[3] = PW_N;  /* [1, 11, 5, 5]: wrong */
  D.out->type.layout.dims[1] = 1, D.out->type.layout.dims[2] = PW_W;
  st = run_dw(ctx, &D);
  tfq_litert_error(ctx, msg, sizeof msg, NULL, NULL);
  check(st == TFQ_ERR_SHAPE && strstr(msg, "then a pointwise layer") && all_nan(D.out),
        "chained depthwise: a 4-D output refused");
  D.out->type.layout.rank = 3, D.out->type.layout.dims[1] = PW_W, D.out->type.layout.dims[2] = PW_N;
  header_of(&P)[4] = N - 1;  /* K = 8: the same padded rows and groups */
  int32_t layer_index = 0;
  st = run_dw(ctx, &D);
  tfq_litert_error(ctx, msg, sizeof msg, &layer_index, NULL);
  check(st == TFQ_ERR_SHAPE && strstr(msg, "pointwise layer: K = 8, but the depthwise layer (#7) "
                                           "has C = 9") && layer_index == 8,
        "chained depthwise: pointwise K != C refused, naming the pointwise layer");
  header_of(&P)[4] = N;
  tfq_lrt_layout in[3], out[1];
  memset(in, 0, sizeof in);
  in[0] = D.in[0]->type.layout, in[1] = D.in[1]->type.layout, in[2] = P.in[1]->type.layout;
  tfq_litert_clear_error(ctx);
  tfq_litert_depthwise_kernel()->get_output_layouts(ctx, 3, in, 1, out);
  check(out[0].rank == 3 && out[0].dims[0] == 1 && out[0].dims[1] == PW_W &&
            out[0].dims[2] == PW_N && tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_OK,
        "chained depthwise output layout [1, 11, 5]");
  in[2].rank = 3;
  tfq_litert_depthwise_kernel()->get_output_layouts(ctx, 3, in, 1, out);
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE,
        "chained depthwise layouts: pointwise blob of rank 3");
  in[2].rank = 2, in[0].dims[1] = 1 << 20, in[1].dims[0] = 1 << 12;  /* H * W_out = 2^32 */
  tfq_litert_clear_error(ctx);
  tfq_litert_depthwise_kernel()->get_output_layouts(ctx, 3, in, 1, out);
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE,
        "chained depthwise layouts: H * W_out past int32 refused");
  D.in[2] = NULL;  /* P owns it */
  destroy(&D);
  destroy(&P);
}

static void test_dw(tfq_litert_context *ctx) {
  check(!strcmp(tfq_litert_depthwise_op_name(), TFQ_DW_OP_NAME), "depthwise op name");
  test_dw_valid(ctx, 0, 1, 1, 0, 0);
  test_dw_valid(ctx, 1, 1, 1, 0, 0);
  test_dw_valid(ctx, 0, 2, 1, 35, 34);   /* SAME-like padding, stride 2: zeros outside x */
  test_dw_valid(ctx, 1, 1, 1, 69, 0);    /* causal */
  test_dw_chain(ctx);
  expect_dw_error(ctx, dw_x_short, TFQ_ERR_BUFFER, "tensor x", "depthwise: x buffer short");
  expect_dw_error(ctx, dw_x_channels, TFQ_ERR_BUFFER, "tensor x", "depthwise: x channels");
  expect_dw_error(ctx, dw_x_rank, TFQ_ERR_SHAPE, "expected [B, H, W, 9]", "depthwise: x rank");
  expect_dw_error(ctx, dw_out_width, TFQ_ERR_SHAPE, "W_out 11", "depthwise: output width");
  expect_dw_error(ctx, dw_blob_rows, TFQ_ERR_SHAPE, "the blob's first dim 1)", "depthwise: blob rows vs W_out");
  expect_dw_error(ctx, dw_flatten, TFQ_ERR_FORMAT, "flags 3", "depthwise: flatten flag refused");
  expect_dw_error(ctx, dw_stride_zero, TFQ_ERR_FORMAT, "stride 0", "depthwise: stride 0");
  expect_dw_error(ctx, dw_pad_huge, TFQ_ERR_FORMAT, "padding 0/1048576", "depthwise: huge padding");
  expect_dw_error(ctx, dw_blob_rank, TFQ_ERR_FORMAT, "expected [W_out, rest]", "depthwise: blob rank");
  expect_dw_error(ctx, dw_taps_long, TFQ_ERR_SHAPE, "81 taps", "depthwise: more taps than x is wide");
  tfq_lrt_layout in[2], out[1];
  memset(in, 0, sizeof in);
  in[0].rank = 4, in[0].dims[0] = 1, in[0].dims[1] = 1, in[0].dims[2] = DW_W, in[0].dims[3] = N;
  in[1].rank = 2, in[1].dims[0] = 11, in[1].dims[1] = 90;  /* blob [W_out, rest] */
  tfq_litert_clear_error(ctx);
  tfq_litert_depthwise_kernel()->get_output_layouts(ctx, 2, in, 1, out);
  check(out[0].rank == 4 && out[0].dims[2] == 11 && out[0].dims[3] == N &&
            tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_OK, "depthwise output layout");
  in[0].rank = 3;
  tfq_litert_depthwise_kernel()->get_output_layouts(ctx, 2, in, 1, out);
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE, "depthwise layouts: x rank");
}

/* ---- TFQ_CONV_2D: the FC layer's weights as a 2x5 kernel over C = 7 channels (K = 70) ---- */
enum { CV_B = 2, CV_H = 7, CV_W = 17, CV_C = 7, CV_KH = 2, CV_KW = 5, CV_SH = 2, CV_SW = 3 };
enum { CV_HO = (CV_H - CV_KH) / CV_SH + 1, CV_WO = (CV_W - CV_KW) / CV_SW + 1 };

/* The layer of build() as a convolution: x [B, H, W, C], conv params, geometry [kh, kw, sh, sw]. */
static void build_conv(layer *L, int symmetric, int32_t flags) {
  build(L, symmetric);
  int32_t dx[4] = {CV_B, CV_H, CV_W, CV_C}, dy[4] = {CV_B, CV_HO, CV_WO, N};
  int32_t dg[4] = {CV_KH, CV_KW, CV_SH, CV_SW};
  reshape_4d(L, dx, dy);
  int32_t p[TFQ_BLOB_PARAMS_MAX] = {TFQ_CONV_PARAMS_VERSION, TFQ_ACT_RELU, flags, 7,
                                    CV_KH, CV_KW, CV_SH, CV_SW};
  memcpy(params_of(L), p, sizeof p);
  L->in[2] = make(TFQ_LRT_ELEMENT_UINT8, 4, dg, 1);
  L->num_inputs = 3;
}

static int run_conv(tfq_litert_context *ctx, layer *L) {
  return run_op(tfq_litert_conv_kernel(), ctx, L, L->num_inputs, "conv: every lock released");
}

/* The op equals the fully connected path over patches gathered here by a plain loop, bit for
 * bit: int8 activations (tfq_linear_q8) or float ones (tfq_linear_f32), then relu. */
static void test_conv_valid(tfq_litert_context *ctx, int symmetric, int float_act) {
  layer L;
  build_conv(&L, symmetric, TFQ_OP_FLAG_BIAS | (float_act ? TFQ_OP_FLAG_FLOAT_ACT : 0));
  int st = run_conv(ctx, &L);
  int32_t m = CV_B * CV_HO * CV_WO;
  float *patches = malloc(sizeof(float) * (size_t)m * K), *y = malloc(sizeof(float) * (size_t)m * N);
  const float *x = (const float *)L.in[0]->data;
  for (int32_t b = 0, r = 0; b < CV_B; b++)
    for (int32_t oh = 0; oh < CV_HO; oh++)
      for (int32_t ow = 0; ow < CV_WO; ow++, r++)
        for (int32_t i = 0; i < CV_KH; i++)
          for (int32_t j = 0; j < CV_KW; j++)
            for (int32_t c = 0; c < CV_C; c++)
              patches[(size_t)r * K + (size_t)((i * CV_KW + j) * CV_C + c)] =
                  x[((size_t)(b * CV_H + oh * CV_SH + i) * CV_W + (size_t)(ow * CV_SW + j)) * CV_C + (size_t)c];
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
  /* The op's float path runs the column-interleaved copy where the CPU has a kernel for it
   * (another float sum order): so does the direct call. */
  tfq_packed_weights wr = L.w;
  size_t rb = tfq_repacked_bytes(&wr);
  void *copy = rb ? malloc(rb) : NULL;
  if (copy && tfq_repack(&wr, copy, rb) == TFQ_OK) wr.repacked = copy, wr.repacked_bytes = rb;
  int direct = float_act
      ? tfq_linear_f32(TFQ_ISA_AUTO, &wr, patches, (size_t)m * K, K, m, y, (size_t)m * N, N)
      : tfq_linear_q8(TFQ_ISA_AUTO, &L.w, patches, (size_t)m * K, K, m, y, (size_t)m * N, N, ws,
                      ws_bytes);
  int same = st == TFQ_OK && direct == TFQ_OK, positive = 0;
  for (int32_t i = 0; i < m * N; i++) {
    float want = y[i] > 0.0f ? y[i] : 0.0f, got = ((float *)L.out->data)[i];
    same &= memcmp(&want, &got, sizeof got) == 0;
    positive += got > 0.0f;
  }
  check(same && positive > 0, float_act ? "conv equals im2col + tfq_linear_f32 + relu bit for bit"
                                        : "conv equals im2col + tfq_linear_q8 + relu bit for bit");
  free(copy);
  free(ws);
  free(y);
  free(patches);
  destroy(&L);
}

static void expect_conv_error(tfq_litert_context *ctx, void (*brk)(layer *), int status,
                              const char *needle, const char *what) {
  layer L;
  build_conv(&L, 0, TFQ_OP_FLAG_BIAS);
  brk(&L);
  int st = run_conv(ctx, &L);
  char msg[512];
  tfq_litert_error(ctx, msg, sizeof msg, NULL, NULL);
  int ok = st == status && strstr(msg, needle) != NULL && all_nan(L.out);
  if (!ok) printf("  %s: status %d (want %d), message \"%s\"\n", what, st, status, msg);
  check(ok, what);
  destroy(&L);
}

static int32_t *cv_params(layer *L) { return params_of(L); }
static fake_buffer *cv_geometry(layer *L) { return L->in[2]; }
static void cv_x_short(layer *L) { L->in[0]->bytes -= 4; }
static void cv_x_channels(layer *L) { L->in[0]->type.layout.dims[3] = CV_C + 1; }
static void cv_x_rank(layer *L) { L->in[0]->type.layout.rank = 3; }
static void cv_x_too_small(layer *L) { L->in[0]->type.layout.dims[1] = 1; L->in[0]->bytes /= CV_H; }
static void cv_out_rows(layer *L) { L->out->type.layout.dims[1] -= 1; L->out->bytes -= (size_t)(CV_B * CV_WO * N * 4); }
static void cv_kernel_vs_dims(layer *L) { cv_params(L)[TFQ_CONV_PARAM_KW] = 4; }
static void cv_stride_zero(layer *L) {
  cv_params(L)[TFQ_CONV_PARAM_SH] = 0;
  cv_geometry(L)->type.layout.dims[2] = 0;
}
static void cv_geometry_rank(layer *L) { cv_geometry(L)->type.layout.rank = 3; }
static void cv_blob_rows(layer *L) { L->in[1]->type.layout.dims[0] = 1; L->in[1]->type.layout.dims[1] *= N; }
static void cv_flatten_flag(layer *L) { cv_params(L)[TFQ_OP_PARAM_FLAGS] = TFQ_OP_FLAG_BIAS | TFQ_OP_FLAG_FLATTEN; }
static void cv_header_k(layer *L) { header_of(L)[4] = 110; }

static void test_conv(tfq_litert_context *ctx) {
  check(!strcmp(tfq_litert_conv_op_name(), TFQ_CONV_OP_NAME), "conv op name");
  test_conv_valid(ctx, 0, 0);
  test_conv_valid(ctx, 1, 0);
  test_conv_valid(ctx, 0, 1);
  test_conv_valid(ctx, 1, 1);
  expect_conv_error(ctx, cv_x_short, TFQ_ERR_BUFFER, "tensor x", "conv: x buffer short");
  expect_conv_error(ctx, cv_x_channels, TFQ_ERR_BUFFER, "tensor x", "conv: x channels");
  expect_conv_error(ctx, cv_x_rank, TFQ_ERR_SHAPE, "needs [B, H, W, 7]", "conv: x rank");
  expect_conv_error(ctx, cv_x_too_small, TFQ_ERR_SHAPE, "Ho -1", "conv: x smaller than the kernel");
  expect_conv_error(ctx, cv_out_rows, TFQ_ERR_SHAPE, "Ho 3, Wo 5", "conv: output rows");
  expect_conv_error(ctx, cv_kernel_vs_dims, TFQ_ERR_FORMAT, "kernel 2x4", "conv: params vs geometry");
  expect_conv_error(ctx, cv_stride_zero, TFQ_ERR_FORMAT, "strides 0x3", "conv: stride 0");
  expect_conv_error(ctx, cv_geometry_rank, TFQ_ERR_FORMAT, "geometry tensor of rank 3", "conv: geometry rank");
  expect_conv_error(ctx, cv_blob_rows, TFQ_ERR_FORMAT, "N = 9 needs [9, rest]", "conv: blob dims vs N");
  expect_conv_error(ctx, cv_flatten_flag, TFQ_ERR_FORMAT, "flags 3", "conv: flatten flag refused");
  expect_conv_error(ctx, cv_header_k, TFQ_ERR_BUFFER, "K=110", "conv: header K disagrees with data");
  layer G;  /* the geometry input missing */
  build_conv(&G, 0, TFQ_OP_FLAG_BIAS);
  G.num_inputs = 2;
  check(run_conv(ctx, &G) == TFQ_ERR_SHAPE, "conv: 2 inputs");
  destroy(&G);
  tfq_lrt_layout in[3], out[1];
  memset(in, 0, sizeof in);
  in[0].rank = 4, in[0].dims[0] = CV_B, in[0].dims[1] = CV_H, in[0].dims[2] = CV_W, in[0].dims[3] = CV_C;
  in[1].rank = 2, in[1].dims[0] = N, in[1].dims[1] = 80;
  in[2].rank = 4, in[2].dims[0] = CV_KH, in[2].dims[1] = CV_KW, in[2].dims[2] = CV_SH;
  in[2].dims[3] = CV_SW;
  tfq_litert_clear_error(ctx);
  tfq_litert_conv_kernel()->get_output_layouts(ctx, 3, in, 1, out);
  check(out[0].rank == 4 && out[0].dims[0] == CV_B && out[0].dims[1] == CV_HO &&
            out[0].dims[2] == CV_WO && out[0].dims[3] == N &&
            tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_OK, "conv output layout");
  in[2].rank = 2;
  tfq_litert_conv_kernel()->get_output_layouts(ctx, 3, in, 1, out);
  check(tfq_litert_error(ctx, NULL, 0, NULL, NULL) == TFQ_ERR_SHAPE, "conv layouts: geometry rank");
}

int main(void) {
  tfq_litert_api api = {fake_type, fake_size, fake_lock, fake_unlock};
  tfq_litert_api incomplete = api;
  incomplete.lock = NULL;
  check(tfq_litert_context_create(NULL) == NULL && tfq_litert_context_create(&incomplete) == NULL,
        "incomplete api refused");
  check(!strcmp(tfq_litert_op_name(), TFQ_OP_NAME), "op name");
  tfq_litert_context *ctx = tfq_litert_context_create(&api);
  test_valid(ctx, 1);
  test_valid(ctx, 0);
  test_valid(ctx, 1);  /* the workspace is reused */
  test_valid_swish(ctx);
  test_valid_dense(ctx, 1);
  test_valid_dense(ctx, 0);
  test_valid_float(ctx, 1, 0);
  test_valid_float(ctx, 0, 0);
  test_valid_float(ctx, 1, 1);
  /* Every validation path, on the int8 path and again on the float-activation path. */
  for (int pass = 0; pass < 2; pass++) {
    extra_flags = pass ? TFQ_OP_FLAG_FLOAT_ACT : 0;
    expect_error(ctx, 1, header_k, 0, TFQ_ERR_BUFFER, "the data section has 432 bytes, the header (K=110", "header K disagrees with data");
    expect_error(ctx, 1, header_k_same_row, 0, TFQ_ERR_SHAPE, "x has shape [3, 5, 70], the header says K = 75", "header K disagrees with x");
    expect_error(ctx, 1, header_magic, 0, TFQ_ERR_FORMAT, "header", "bad magic");
    expect_error(ctx, 1, header_n_huge, 0, TFQ_ERR_SHAPE, "out of range", "huge N");
    expect_error(ctx, 1, header_g_zero, 0, TFQ_ERR_SHAPE, "G 0", "zero group size");
    expect_error(ctx, 1, header_bits, 0, TFQ_ERR_FORMAT, "bits 3", "3 bits");
    expect_error(ctx, 1, header_f16, 0, TFQ_ERR_BUFFER, "the scales section has 108 bytes", "f16 header, f32 scales");
    expect_error(ctx, 1, header_sym_flip, 0, TFQ_ERR_FORMAT, "symmetric 0, scale_is_f16 0 with no zero-point section", "asymmetric header, no zero points");
    expect_error(ctx, 0, header_sym_flip, 0, TFQ_ERR_FORMAT, "symmetric 1, scale_is_f16 0 with a zero-point section", "symmetric header with zero points");
    expect_error(ctx, 1, nothing, 1, TFQ_ERR_SHAPE, "expected 2 inputs (x, blob), got 1", "1 input");
    expect_error(ctx, 1, x_wrong_k, 0, TFQ_ERR_SHAPE, "K = 70", "x last dim != K");
    expect_error(ctx, 1, x_short, 0, TFQ_ERR_BUFFER, "tensor x", "x buffer short");
    expect_error(ctx, 1, x_negative, 0, TFQ_ERR_SHAPE, "invalid shape", "negative dim");
    expect_error(ctx, 1, data_short, 0, TFQ_ERR_BUFFER, "the data section has 384 bytes", "data short");
    expect_error(ctx, 1, scales_misaligned, 0, TFQ_ERR_BUFFER, "the scales section at offset 580", "scales misaligned");
    expect_error(ctx, 1, scales_overlap, 0, TFQ_ERR_BUFFER, "the scales section at offset 128", "scales on top of the data");
    expect_error(ctx, 1, bias_past_end, 0, TFQ_ERR_BUFFER, "the bias section at offset", "bias past the blob's end");
    expect_error(ctx, 1, blob_magic, 0, TFQ_ERR_FORMAT, "blob: magic 0x00000007", "blob magic");
    expect_error(ctx, 1, blob_reserved, 0, TFQ_ERR_FORMAT, "reserved word 31 is 1", "blob reserved word");
    expect_error(ctx, 1, blob_short, 0, TFQ_ERR_FORMAT, "99 bytes, less than its 128-byte descriptor", "blob shorter than its descriptor");
    expect_error(ctx, 1, blob_type, 0, TFQ_ERR_FORMAT, "tensor blob: element type 2", "blob of int32");
    expect_error(ctx, 1, blob_rows, 0, TFQ_ERR_FORMAT, "without the flatten flag needs [9, rest]", "blob dims vs N");
    expect_error(ctx, 1, out_wrong, 0, TFQ_ERR_SHAPE, "output has shape", "output shape");
    expect_error(ctx, 1, params_version, 0, TFQ_ERR_FORMAT, "version 9", "params version");
    expect_error(ctx, 1, params_act, 0, TFQ_ERR_FORMAT, "activation 99", "params activation");
    expect_error(ctx, 1, params_flatten, 0, TFQ_ERR_FORMAT, "with the flatten flag needs [1, 9, rest]", "flatten flag vs blob rank");
    expect_error(ctx, 1, params_unused, 0, TFQ_ERR_FORMAT, "value 6 is 1; this op reads 5 values", "unused params nonzero");
    expect_error(ctx, 1, params_static_no_scale, 0, TFQ_ERR_FORMAT, "a static activation scale 0", "static flag without a scale");
    expect_error(ctx, 1, params_scale_no_flag, 0, TFQ_ERR_FORMAT, "param 4 is 5 without the static flag", "static scale without the flag");
    expect_error(ctx, 1, bias_short, 0, TFQ_ERR_BUFFER, "the bias section has 32 bytes", "bias short");
    expect_error(ctx, 1, bias_flag_off, 0, TFQ_ERR_BUFFER, "no bias) needs 0", "bias section without the flag");
    expect_error(ctx, 0, zp_out_of_range, 0, TFQ_ERR_ZERO_POINT, "zero points", "zero point 16");
    expect_error(ctx, 1, params_unknown_flag, 0, TFQ_ERR_FORMAT, pass ? "flags 21" : "flags 17", "unknown flag bit 16");
  }
  extra_flags = 0;
  /* The first error of a run is kept, with its layer. */
  layer a, b;
  build(&a, 1);
  build(&b, 1);
  x_wrong_k(&b);
  header_magic(&a);
  const tfq_lrt_custom_kernel *k = tfq_litert_kernel();
  tfq_lrt_buffer ia[2] = {a.in[0], a.in[1]}, ib[2] = {b.in[0], b.in[1]}, oa[1] = {a.out}, ob[1] = {b.out};
  tfq_litert_clear_error(ctx);
  k->run(ctx, 2, ib, 1, ob);
  k->run(ctx, 2, ia, 1, oa);
  char msg[512];
  int32_t layer_index;
  int64_t calls;
  int st = tfq_litert_error(ctx, msg, sizeof msg, &layer_index, &calls);
  check(st == TFQ_ERR_SHAPE && layer_index == 7 && calls == 2 && strstr(msg, "K = 70"),
        "first error kept with its layer");
  destroy(&a);
  destroy(&b);
  test_output_layouts(ctx);
  test_dw(ctx);
  test_conv(ctx);
  tfq_litert_context_destroy(ctx);
  printf("litert op: %d passed, %d failed\n", passes, failures);
  return failures ? 1 : 0;
}
