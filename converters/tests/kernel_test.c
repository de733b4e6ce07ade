/*
 * tfq_kernel_test: every kernel this CPU can run against the reference, over a sweep of random
 * shapes (odd K and N, ragged and unaligned groups, M = 1..65, int4/int2, sym/asym,
 * f32/f16 scales, with and without bias), plus the reference against an independent
 * implementation of the numerics contract, plus the error paths.  Buffers are allocated at
 * exactly the size the API is told, so under AddressSanitizer any read past one fails.
 *
 *   tfq_kernel_test [--cases N] [--seed S] [--require isa,isa,...]
 * --require makes the run fail if a listed ISA is not available (so a CI run on the wrong
 * machine cannot pass by testing only the reference).  Exit status 0 only if all passed.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/kernels.h"
#include "internal.h" /* each ISA's quantizer, for the quantizer checks */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}

static int32_t rnd_range(int32_t lo, int32_t hi) { /* inclusive */
  return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1));
}

static float rnd_unit(void) { return (float)(rnd() >> 8) / 16777216.0f; } /* [0, 1) */

static int failures = 0, passes = 0, printed = 0;

static void report(int ok, const char *what, const char *desc) {
  if (ok) {
    passes++;
    return;
  }
  failures++;
  if (printed++ < 20) fprintf(stderr, "FAIL %s: %s\n", what, desc);
}

/* ---- a layer built by the test, with its own decoded copy of the truth ---- */
typedef struct layer {
  tfq_packed_weights w;
  int32_t groups;
  int32_t *value;  /* [n][k] signed weight value (before zero point) */
  float *scale;    /* [groups][n] */
  uint8_t *zp;     /* [groups][n] or NULL */
  void *scales_buf;
  uint8_t *data;
  float *bias;
} layer;

/* An f16-representable positive normal number, built without any f16 conversion code. */
static float rnd_f16_value(uint16_t *bits) {
  int32_t e = rnd_range(6, 16), man = rnd_range(0, 1023);
  *bits = (uint16_t)((e << 10) | man);
  return ldexpf(1.0f + (float)man / 1024.0f, e - 15);
}

static void make_layer(layer *L, int bits, int sym, int f16, int with_bias, int32_t k, int32_t n,
                       int32_t g) {
  memset(L, 0, sizeof *L);
  L->groups = k / g + (k % g != 0);
  size_t rb = tfq_row_bytes(k, bits), params = (size_t)n * (size_t)L->groups;
  L->data = malloc((size_t)n * rb);
  L->value = malloc(sizeof(int32_t) * (size_t)n * (size_t)k);
  L->scale = malloc(sizeof(float) * params);
  L->scales_buf = malloc(params * (f16 ? 2 : 4));
  /* Random bytes everywhere, so the padding past K is random too and must not matter. */
  for (size_t i = 0; i < (size_t)n * rb; i++) L->data[i] = (uint8_t)rnd();
  int32_t lo = sym ? -(1 << (bits - 1)) : 0, hi = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (int32_t j = 0; j < n; j++) {
    uint8_t *row = L->data + (size_t)j * rb;
    for (int32_t i = 0; i < k; i++) {
      int32_t v = rnd_range(lo, hi);
      L->value[(size_t)j * k + i] = v;
      uint32_t field = (uint32_t)v & ((1u << bits) - 1);
      int per = 8 / bits, shift = bits * (i % per);
      uint8_t *b = row + i / per;
      *b = (uint8_t)((*b & ~(((1u << bits) - 1) << shift)) | (field << shift));
    }
  }
  for (size_t i = 0; i < params; i++) {
    uint16_t hb;
    float s = rnd_f16_value(&hb);
    if (f16) {
      ((uint16_t *)L->scales_buf)[i] = hb;
    } else {
      s = s * (1.0f + rnd_unit() * 0x1p-11f); /* not f16-representable */
      ((float *)L->scales_buf)[i] = s;
    }
    L->scale[i] = s;
  }
  if (!sym) {
    L->zp = malloc(params);
    for (size_t i = 0; i < params; i++) L->zp[i] = (uint8_t)rnd_range(0, (1 << bits) - 1);
  }
  if (with_bias) {
    L->bias = malloc(sizeof(float) * (size_t)n);
    for (int32_t j = 0; j < n; j++) L->bias[j] = (rnd_unit() - 0.5f) * 4.0f;
  }
  tfq_packed_weights w = {
      .bits = bits, .symmetric = sym, .k = k, .n = n, .group_size = g, .scale_is_f16 = f16,
      .data = L->data, .data_bytes = (size_t)n * rb,
      .scales = L->scales_buf, .scales_bytes = params * (f16 ? 2 : 4),
      .zero_points = L->zp, .zero_points_bytes = L->zp ? params : 0,
      .bias = L->bias, .bias_count = L->bias ? (size_t)n : 0,
  };
  L->w = w;
}

static void free_layer(layer *L) {
  free(L->data);
  free(L->value);
  free(L->scale);
  free(L->scales_buf);
  free(L->zp);
  free(L->bias);
}

/* Activations: mixed magnitudes, an all-zero row, and rows of exact ties (max 127, so
 * s_a = 1 and x.5 values test round-half-even). */
static float *make_input(int32_t m, int32_t k, size_t stride, size_t *count) {
  *count = (size_t)(m - 1) * stride + (size_t)k;
  float *x = malloc(sizeof(float) * *count);
  for (int32_t i = 0; i < m; i++) {
    float *row = x + (size_t)i * stride;
    int kind = rnd_range(0, 9);
    float mag = ldexpf(1.0f, rnd_range(-10, 10));
    for (int32_t j = 0; j < k; j++) {
      if (kind == 0)
        row[j] = 0.0f;
      else if (kind == 1)
        row[j] = (float)rnd_range(-127, 126) + 0.5f;
      else
        row[j] = (rnd_unit() * 2.0f - 1.0f) * mag;
    }
    if (kind == 1) row[rnd_range(0, k - 1)] = rnd() & 1 ? 127.0f : -127.0f;
  }
  return x;
}

/* The contract, written independently of the library. */
static void contract_q8(const layer *L, const float *x, size_t stride, int32_t m, float *y,
                        size_t y_stride) {
  const tfq_packed_weights *w = &L->w;
  int32_t g_size = w->group_size < w->k ? w->group_size : w->k;
  int8_t *q = malloc((size_t)w->k);
  for (int32_t i = 0; i < m; i++) {
    const float *row = x + (size_t)i * stride;
    float mx = 0.0f;
    for (int32_t j = 0; j < w->k; j++) mx = fabsf(row[j]) > mx ? fabsf(row[j]) : mx;
    float s = mx > 0.0f ? mx / 127.0f : 1.0f;
    for (int32_t j = 0; j < w->k; j++) {
      float r = nearbyintf(row[j] / s);
      q[j] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    for (int32_t n = 0; n < w->n; n++) {
      float sum = 0.0f;
      for (int32_t g = 0; g < L->groups; g++) {
        int32_t zp = L->zp ? L->zp[(size_t)g * w->n + n] : 0, acc = 0;
        for (int32_t j = g * g_size; j < w->k && j < (g + 1) * g_size; j++)
          acc += q[j] * (L->value[(size_t)n * w->k + j] - zp);
        volatile float term = L->scale[(size_t)g * w->n + n] * (float)acc;
        sum = sum + term;
      }
      volatile float out = s * sum;
      if (L->bias) out = out + L->bias[n];
      y[(size_t)i * y_stride + n] = out;
    }
  }
  free(q);
}

/* Float path: largest |y - y64| allowed, from the float64 result and the sum of |terms|. */
static int check_f32(const layer *L, const float *x, size_t stride, int32_t m, const float *y,
                     size_t y_stride) {
  const tfq_packed_weights *w = &L->w;
  int32_t g_size = w->group_size < w->k ? w->group_size : w->k;
  for (int32_t i = 0; i < m; i++) {
    for (int32_t n = 0; n < w->n; n++) {
      double sum = 0.0, mag = 0.0;
      for (int32_t g = 0; g < L->groups; g++) {
        int32_t zp = L->zp ? L->zp[(size_t)g * w->n + n] : 0;
        double part = 0.0, part_mag = 0.0, s = L->scale[(size_t)g * w->n + n];
        for (int32_t j = g * g_size; j < w->k && j < (g + 1) * g_size; j++) {
          double t = (double)x[(size_t)i * stride + j] * (L->value[(size_t)n * w->k + j] - zp);
          part += t;
          part_mag += fabs(t);
        }
        sum += s * part;
        mag += s * part_mag;
      }
      if (L->bias) {
        sum += L->bias[n];
        mag += fabs(L->bias[n]);
      }
      /* Recursive float summation of K + groups + 1 terms: error <= (terms) * eps * SUM|t|. */
      double tol = (double)(w->k + L->groups + 2) * FLT_EPSILON * mag + 1e-30;
      if (fabs((double)y[(size_t)i * y_stride + n] - sum) > tol) return 0;
    }
  }
  return 1;
}

static int same_bits(const float *a, const float *b, int32_t m, int32_t n, size_t stride) {
  for (int32_t i = 0; i < m; i++)
    if (memcmp(a + (size_t)i * stride, b + (size_t)i * stride, sizeof(float) * (size_t)n) != 0)
      return 0;
  return 1;
}

static void *ws_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

static void run_case(int bits, int sym, int f16, int with_bias, int32_t m, int32_t k, int32_t n,
                     int32_t g) {
  char desc[160];
  snprintf(desc, sizeof desc, "bits=%d sym=%d f16=%d bias=%d M=%d K=%d N=%d G=%d", bits, sym,
           f16, with_bias, m, k, n, g);
  layer L;
  make_layer(&L, bits, sym, f16, with_bias, k, n, g);
  size_t x_stride = (size_t)k + (size_t)rnd_range(0, 3), x_count;
  float *x = make_input(m, k, x_stride, &x_count);
  size_t y_stride = (size_t)n + (size_t)rnd_range(0, 3);
  size_t y_count = (size_t)(m - 1) * y_stride + (size_t)n;
  float *y_ref = malloc(sizeof(float) * y_count), *y = malloc(sizeof(float) * y_count);
  float *y_contract = malloc(sizeof(float) * y_count);
  memset(y_ref, 0, sizeof(float) * y_count);
  memset(y_contract, 0, sizeof(float) * y_count);
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = ws_alloc(ws_bytes);

  int st = tfq_linear_q8(TFQ_ISA_REF, &L.w, x, x_count, x_stride, m, y_ref, y_count, y_stride,
                         ws, ws_bytes);
  report(st == TFQ_OK, "ref status", desc);
  contract_q8(&L, x, x_stride, m, y_contract, y_stride);
  report(same_bits(y_ref, y_contract, m, n, y_stride), "ref vs contract", desc);

  /* Activations quantized by the library, at a stride wider than K. */
  size_t qa_stride = (size_t)k + (size_t)rnd_range(0, 5);
  size_t qa_count = (size_t)(m - 1) * qa_stride + (size_t)k;
  int8_t *qa = malloc(qa_count);
  float *sa = malloc(sizeof(float) * (size_t)m);
  st = tfq_quantize_rows_q8(x, x_count, x_stride, m, k, qa, qa_count, qa_stride, sa, (size_t)m);
  report(st == TFQ_OK, "quantize status", desc);

  /* A static (calibrated) scale: 0.6 of the rows' largest max|x| / 127, so some inputs clip.
   * The reference's tfq_linear_q8_static equals tfq_matmul_q8 on rows quantized by hand with
   * that scale (nearest-even, clamped to +-127, as the contract quantizes a row). */
  float amax = 0.0f;
  for (int32_t i = 0; i < m; i++)
    for (int32_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(x[(size_t)i * x_stride + (size_t)j]));
  float fixed = amax > 0.0f ? 0.6f * amax / 127.0f : 1.0f;
  float *y_static = malloc(sizeof(float) * y_count), *y_hand = malloc(sizeof(float) * y_count);
  int8_t *qs = malloc(qa_count);
  float *ss = malloc(sizeof(float) * (size_t)m);
  memset(y_static, 0, sizeof(float) * y_count);
  memset(y_hand, 0, sizeof(float) * y_count);
  for (int32_t i = 0; i < m; i++) {
    ss[i] = fixed;
    for (int32_t j = 0; j < k; j++) {
      float v = nearbyintf(x[(size_t)i * x_stride + (size_t)j] / fixed);
      qs[(size_t)i * qa_stride + (size_t)j] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
  }
  st = tfq_linear_q8_static(TFQ_ISA_REF, &L.w, x, x_count, x_stride, m, fixed, y_static, y_count,
                            y_stride, ws, ws_bytes);
  report(st == TFQ_OK, "ref linear_q8_static status", desc);
  st = tfq_matmul_q8(TFQ_ISA_REF, &L.w, qs, qa_count, qa_stride, ss, (size_t)m, m, y_hand, y_count,
                     y_stride, ws, ws_bytes);
  report(st == TFQ_OK && same_bits(y_static, y_hand, m, n, y_stride), "ref linear_q8_static vs hand", desc);
  report(tfq_linear_q8_static(TFQ_ISA_REF, &L.w, x, x_count, x_stride, m, -1.0f, y_hand, y_count,
                              y_stride, ws, ws_bytes) == TFQ_ERR_FORMAT &&
         tfq_linear_q8_static(TFQ_ISA_REF, &L.w, x, x_count, x_stride, m, NAN, y_hand, y_count,
                              y_stride, ws, ws_bytes) == TFQ_ERR_FORMAT, "static scale refused", desc);

  /* Pass 1 gives the layer its column-interleaved copy (tfq_repack), which the AVX-512 VNNI
   * kernels then use: same bits as the reference; the other ISAs ignore it. */
  void *repacked = NULL;
  for (int pass = 0; pass < 2; pass++) {
  if (pass == 1) {
    size_t rb = tfq_repacked_bytes(&L.w);
    if (rb == 0) break;
    repacked = malloc(rb);
    st = tfq_repack(&L.w, repacked, rb);
    report(st == TFQ_OK, "repack status", desc);
    L.w.repacked = repacked, L.w.repacked_bytes = rb;
    ws_bytes = tfq_workspace_bytes(&L.w, m);
    report(ws_bytes > 0, "workspace with repacked weights", desc);
  }
  for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++) {
    if (!tfq_isa_available((tfq_isa)isa)) continue;
    char what[64];
    memset(y, 0, sizeof(float) * y_count);
    st = tfq_linear_q8((tfq_isa)isa, &L.w, x, x_count, x_stride, m, y, y_count, y_stride, ws,
                       ws_bytes);
    snprintf(what, sizeof what, "%s%s linear_q8", tfq_isa_name((tfq_isa)isa), pass ? " repacked" : "");
    report(st == TFQ_OK && same_bits(y, y_ref, m, n, y_stride), what, desc);

    memset(y, 0, sizeof(float) * y_count);
    st = tfq_linear_q8_static((tfq_isa)isa, &L.w, x, x_count, x_stride, m, fixed, y, y_count,
                              y_stride, ws, ws_bytes);
    snprintf(what, sizeof what, "%s%s linear_q8_static", tfq_isa_name((tfq_isa)isa), pass ? " repacked" : "");
    report(st == TFQ_OK && same_bits(y, y_static, m, n, y_stride), what, desc);

    memset(y, 0, sizeof(float) * y_count);
    st = tfq_matmul_q8((tfq_isa)isa, &L.w, qa, qa_count, qa_stride, sa, (size_t)m, m, y, y_count,
                       y_stride, ws, ws_bytes);
    snprintf(what, sizeof what, "%s%s matmul_q8", tfq_isa_name((tfq_isa)isa), pass ? " repacked" : "");
    report(st == TFQ_OK && same_bits(y, y_ref, m, n, y_stride), what, desc);

    /* Column ranges as two threads would run them, sharing one prepared workspace. */
    memset(y, 0, sizeof(float) * y_count);
    int32_t split = rnd_range(0, n);
    st = tfq_prepare_q8((tfq_isa)isa, &L.w, qa, qa_count, qa_stride, m, ws, ws_bytes);
    if (st == TFQ_OK)
      st = tfq_matmul_q8_cols((tfq_isa)isa, &L.w, sa, (size_t)m, m, split, n, y, y_count,
                              y_stride, ws, ws_bytes);
    if (st == TFQ_OK)
      st = tfq_matmul_q8_cols((tfq_isa)isa, &L.w, sa, (size_t)m, m, 0, split, y, y_count,
                              y_stride, ws, ws_bytes);
    snprintf(what, sizeof what, "%s%s matmul_q8_cols", tfq_isa_name((tfq_isa)isa), pass ? " repacked" : "");
    report(st == TFQ_OK && same_bits(y, y_ref, m, n, y_stride), what, desc);

    memset(y, 0, sizeof(float) * y_count);
    st = tfq_linear_f32((tfq_isa)isa, &L.w, x, x_count, x_stride, m, y, y_count, y_stride);
    snprintf(what, sizeof what, "%s linear_f32", tfq_isa_name((tfq_isa)isa));
    report(st == TFQ_OK && check_f32(&L, x, x_stride, m, y, y_stride), what, desc);
    /* The NEON tables' float path (matmul_f32_blocked.c) is the reference's arithmetic in the
     * reference's order: the same bits, not only within the tolerance. */
    if (st == TFQ_OK && (isa == TFQ_ISA_NEON || isa == TFQ_ISA_NEON_DOTPROD)) {
      float *yr = (float *)calloc(y_count, sizeof(float));
      int sr = yr ? tfq_linear_f32(TFQ_ISA_REF, &L.w, x, x_count, x_stride, m, yr, y_count, y_stride)
                  : TFQ_ERR_WORKSPACE;
      snprintf(what, sizeof what, "%s linear_f32 equals the reference", tfq_isa_name((tfq_isa)isa));
      report(sr == TFQ_OK && same_bits(y, yr, m, n, y_stride), what, desc);
      free(yr);
    }
    /* Above 8 rows the AVX-512 column path decodes each column block once for all row tiles;
     * its first 8 rows must equal those of an 8-row call (which decodes per tile) bit for bit. */
    if (st == TFQ_OK && m > 8) {
      size_t y8_count = 7 * y_stride + (size_t)n;
      float *y8 = (float *)malloc(sizeof(float) * y8_count);
      st = y8 ? tfq_linear_f32((tfq_isa)isa, &L.w, x, x_count, x_stride, 8, y8, y8_count, y_stride)
              : TFQ_ERR_WORKSPACE;
      snprintf(what, sizeof what, "%s linear_f32 rows 0-7 alone", tfq_isa_name((tfq_isa)isa));
      report(st == TFQ_OK && same_bits(y, y8, 8, n, y_stride), what, desc);
      free(y8);
    }
  }
  }
  free(repacked);
  free(qa);
  free(sa);
  free(ws);
  free(x);
  free(y);
  free(y_ref);
  free(y_contract);
  free(y_static);
  free(y_hand);
  free(qs);
  free(ss);
  free_layer(&L);
}

/* Every bad argument gives its error code and leaves the output untouched. */
static void check_errors(void) {
  layer L;
  make_layer(&L, 4, 0, 0, 1, 100, 7, 32);
  int32_t m = 3;
  size_t x_count = 300, y_count = 21;
  float x[300], y[21];
  for (int i = 0; i < 300; i++) x[i] = (float)(i % 17) - 8.0f;
  size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
  void *ws = ws_alloc(ws_bytes);
  tfq_packed_weights w;
#define EXPECT(name, expr, code)                                                      \
  do {                                                                                \
    for (int i_ = 0; i_ < 21; i_++) y[i_] = 12345.0f;                                 \
    int st_ = (expr);                                                                 \
    int untouched_ = 1;                                                               \
    for (int i_ = 0; i_ < 21; i_++) untouched_ &= y[i_] == 12345.0f;                  \
    report(st_ == (code) && (code == TFQ_OK || untouched_), "error path", name);      \
  } while (0)
#define LIN(wp, xc, xs, mm, yc, ys, wsp, wsb) \
  tfq_linear_q8(TFQ_ISA_AUTO, wp, x, xc, xs, mm, y, yc, ys, wsp, wsb)

  EXPECT("valid call", LIN(&L.w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_OK);
  EXPECT("x one short", LIN(&L.w, x_count - 1, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_BUFFER);
  EXPECT("x stride < K", LIN(&L.w, x_count, 99, m, y_count, 7, ws, ws_bytes), TFQ_ERR_STRIDE);
  EXPECT("y one short", LIN(&L.w, x_count, 100, m, y_count - 1, 7, ws, ws_bytes), TFQ_ERR_BUFFER);
  EXPECT("y stride < N", LIN(&L.w, x_count, 100, m, y_count, 6, ws, ws_bytes), TFQ_ERR_STRIDE);
  EXPECT("M negative", LIN(&L.w, x_count, 100, -1, y_count, 7, ws, ws_bytes), TFQ_ERR_SHAPE);
  EXPECT("workspace short", LIN(&L.w, x_count, 100, m, y_count, 7, ws, ws_bytes - 1),
         TFQ_ERR_WORKSPACE);
  EXPECT("workspace misaligned",
         LIN(&L.w, x_count, 100, m, y_count, 7, (char *)ws + 4, ws_bytes - 64), TFQ_ERR_WORKSPACE);
  EXPECT("workspace NULL", LIN(&L.w, x_count, 100, m, y_count, 7, NULL, ws_bytes),
         TFQ_ERR_WORKSPACE);
  w = L.w;
  w.data_bytes--;
  EXPECT("data one short", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_BUFFER);
  w = L.w;
  w.scales_bytes--;
  EXPECT("scales one short", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_BUFFER);
  w = L.w;
  w.zero_points_bytes--;
  EXPECT("zero points one short", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes),
         TFQ_ERR_BUFFER);
  w = L.w;
  w.bias_count--;
  EXPECT("bias one short", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_BUFFER);
  w = L.w;
  w.zero_points = NULL;
  EXPECT("zero points NULL", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_NULL);
  w = L.w;
  w.bits = 3;
  EXPECT("bits 3", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_FORMAT);
  w = L.w;
  w.group_size = 0;
  EXPECT("G 0", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_SHAPE);
  w = L.w;
  w.k = TFQ_MAX_K + 1;
  EXPECT("K too large", LIN(&w, x_count, 100, m, y_count, 7, ws, ws_bytes), TFQ_ERR_SHAPE);
  /* A zero point out of range is reported by tfq_weights_check; compute calls do not scan
   * for it, but still compute the formula exactly, the same on every ISA. */
  L.zp[5] = 255;
  report(tfq_weights_check(&L.w) == TFQ_ERR_ZERO_POINT, "error path", "zero point 255");
  float y_ref[21];
  int st = tfq_linear_q8(TFQ_ISA_REF, &L.w, x, x_count, 100, m, y_ref, y_count, 7, ws, ws_bytes);
  for (int isa = TFQ_ISA_AVX2; isa < TFQ_ISA_COUNT; isa++) {
    if (!tfq_isa_available((tfq_isa)isa)) continue;
    int st2 = tfq_linear_q8((tfq_isa)isa, &L.w, x, x_count, 100, m, y, y_count, 7, ws, ws_bytes);
    report(st == TFQ_OK && st2 == TFQ_OK && same_bits(y, y_ref, m, 7, 7), "error path",
           "zero point 255 computes the same on every ISA");
  }
  L.zp[5] = 3;
  report(tfq_weights_check(&L.w) == TFQ_OK, "error path", "valid weights check");
  for (int isa = TFQ_ISA_AVX2; isa < TFQ_ISA_COUNT; isa++) {
    if (tfq_isa_available((tfq_isa)isa)) continue;
    EXPECT("unavailable ISA",
           tfq_linear_q8((tfq_isa)isa, &L.w, x, x_count, 100, m, y, y_count, 7, ws, ws_bytes),
           TFQ_ERR_ISA);
  }
  EXPECT("ISA out of range",
         tfq_linear_q8((tfq_isa)99, &L.w, x, x_count, 100, m, y, y_count, 7, ws, ws_bytes),
         TFQ_ERR_ISA);
  EXPECT("cols past N",
         tfq_matmul_q8_cols(TFQ_ISA_AUTO, &L.w, x, 3, m, 0, 8, y, y_count, 7, ws, ws_bytes),
         TFQ_ERR_SHAPE);
  /* A workspace prepared for 3 rows must be refused for 2. */
  int8_t qa[300];
  float sa[3] = {1.0f, 1.0f, 1.0f};
  memset(qa, 1, sizeof qa);
  tfq_prepare_q8(TFQ_ISA_AUTO, &L.w, qa, 300, 100, 3, ws, ws_bytes);
  EXPECT("cols on a workspace prepared for other rows",
         tfq_matmul_q8_cols(TFQ_ISA_AUTO, &L.w, sa, 3, 2, 0, 7, y, y_count, 7, ws, ws_bytes),
         TFQ_ERR_WORKSPACE);
  int32_t header[TFQ_HEADER_COUNT] = {TFQ_HEADER_MAGIC, TFQ_FORMAT_VERSION, 2, 1, 10, 3, 32, 1};
  w = L.w;
  report(tfq_weights_from_header(&w, header, TFQ_HEADER_COUNT) == TFQ_OK && w.bits == 2 &&
             w.symmetric == 1 && w.k == 10 && w.n == 3 && w.group_size == 32 &&
             w.scale_is_f16 == 1,
         "error path", "header parse");
  header[0] = 0;
  report(tfq_weights_from_header(&w, header, TFQ_HEADER_COUNT) == TFQ_ERR_FORMAT, "error path",
         "header magic");
  free(ws);
  free_layer(&L);
}

/* Non-finite activations: the library's quantizer (SIMD where available) must give what the
 * reference formula gives: NaN ignored by the row maximum and quantized to 0, an infinite
 * maximum making every element 0.  K = 45 covers the vector body and the scalar tail. */
/* Rows quantized by the quantizer of one ISA's kernel table (the public tfq_quantize_rows_q8
 * runs only the best one). */
static void quantize_isa(tfq_isa isa, const float *x, int32_t m, int32_t k, int8_t *qa, float *sa) {
  tfq_rows rows = {.x = x, .m = m, .k = k, .parts = 1, .stride = (size_t)k};
  tfq_quantizer(tfq_kernel_table_for(isa))(&rows, qa, (size_t)k, sa);
}

static void check_special_values(tfq_isa isa) {
  enum { K = 45 };
  float x[3 * K];
  int8_t qa[3 * K];
  float sa[3];
  for (int j = 0; j < 3 * K; j++) x[j] = (float)(j % 11) - 5.25f;
  x[3] = NAN;
  x[40] = NAN;
  x[K + 7] = INFINITY;
  x[2 * K + 44] = -INFINITY;
  quantize_isa(isa, x, 3, K, qa, sa);
  int ok = sa[0] == 5.25f / 127.0f && isinf(sa[1]) && isinf(sa[2]);
  for (int j = 0; j < K && ok; j++) {
    float r = x[j] != x[j] ? 0.0f : nearbyintf(x[j] / sa[0]);
    ok = qa[j] == (int8_t)r && qa[K + j] == 0 && qa[2 * K + j] == 0;
  }
  report(ok, "special values", tfq_isa_name(isa));
}

/* Activations on and around the ties of x / s (x = (n + 0.5) * s and its float neighbours),
 * over scales from subnormal rows to 2^60: the SIMD quantizer multiplies by 1 / s and must
 * divide wherever the product could round to another integer than the quotient. */
static void check_quantize_ties(tfq_isa isa) {
  enum { K = 203, ROWS = 400 };
  static float x[ROWS * K];
  static int8_t qa[ROWS * K];
  static float sa[ROWS];
  for (int i = 0; i < ROWS; i++) {
    float *row = x + (size_t)i * K;
    /* Row maxima from 2^-140 (scale subnormal) to 2^60, a few of them powers of two. */
    float max_abs = ldexpf(1.0f + (i % 7 == 0 ? 0.0f : rnd_unit()), rnd_range(-140, 60));
    float s = max_abs / 127.0f;
    row[0] = (rnd() & 1) ? max_abs : -max_abs;
    for (int j = 1; j < K; j++) {
      float t = ((float)rnd_range(-126, 126) + 0.5f) * s;
      for (int step = rnd_range(-2, 2); step != 0; step += step > 0 ? -1 : 1)
        t = nextafterf(t, step > 0 ? INFINITY : -INFINITY);
      row[j] = fabsf(t) <= max_abs ? t : row[0];
    }
  }
  quantize_isa(isa, x, ROWS, K, qa, sa);
  int ok = 1;
  for (int i = 0; i < ROWS && ok; i++) {
    float s = fabsf(x[(size_t)i * K]) / 127.0f;
    ok = sa[i] == s;
    for (int j = 0; j < K && ok; j++) {
      float r = nearbyintf(x[(size_t)i * K + j] / s);
      r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
      ok = qa[(size_t)i * K + j] == (int8_t)r;
      if (!ok)
        fprintf(stderr, "row %d (s = %a) element %d: x = %a gives %d, the reference %d\n", i,
                (double)s, j, (double)x[(size_t)i * K + j], qa[(size_t)i * K + j], (int)r);
    }
  }
  report(ok, "quantize ties (x / s at and next to half-integers, every scale)", tfq_isa_name(isa));
}

/* tfq_conv2d_q8 against tfq_linear_q8 on the test's own im2col rows, bit for bit, on every
 * ISA with and without the column-interleaved copy; then its shape and buffer errors. */
static void check_conv2d(int bits, int sym, int32_t b, int32_t h, int32_t wd, int32_t c,
                         int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t n, int32_t g) {
  char desc[200];
  snprintf(desc, sizeof desc, "conv bits=%d sym=%d x=[%d,%d,%d,%d] kernel %dx%d strides %dx%d "
           "N=%d G=%d", bits, sym, b, h, wd, c, kh, kw, sh, sw, n, g);
  int32_t k = kh * kw * c, ho = (h - kh) / sh + 1, wo = (wd - kw) / sw + 1, m = b * ho * wo;
  layer L;
  make_layer(&L, bits, sym, (int)(rnd() & 1), (int)(rnd() & 1), k, n, g);
  size_t x_count;
  float *x = make_input(b * h * wd, c, (size_t)c, &x_count);  /* rows of C: mixed magnitudes */
  /* Sometimes a NaN (ignored by a patch's maximum, quantized to 0) or an infinity (its
   * patches' scale infinite, every element 0) somewhere in x. */
  int special = rnd_range(0, 7);
  if (special <= 1) x[rnd_range(0, (int32_t)x_count - 1)] = special == 0 ? NAN : -INFINITY;
  float *rows = malloc(sizeof(float) * (size_t)m * (size_t)k);
  float *cur = rows;
  for (int32_t bi = 0; bi < b; bi++)
    for (int32_t oh = 0; oh < ho; oh++)
      for (int32_t ow = 0; ow < wo; ow++)
        for (int32_t i = 0; i < kh; i++, cur += kw * c)
          memcpy(cur, x + (((size_t)bi * h + (size_t)(oh * sh + i)) * wd + (size_t)(ow * sw)) * c,
                 sizeof(float) * (size_t)(kw * c));
  size_t y_count = (size_t)m * (size_t)n;
  float *y_rows = malloc(sizeof(float) * y_count), *y = malloc(sizeof(float) * y_count);
  void *repacked = NULL;
  size_t rb = tfq_repacked_bytes(&L.w);
  tfq_conv_geometry geo = {b, h, wd, c, kh, kw, sh, sw};
  for (int pass = 0; pass < (rb ? 2 : 1); pass++) {
    if (pass == 1) {
      repacked = malloc(rb);
      report(tfq_repack(&L.w, repacked, rb) == TFQ_OK, "conv repack status", desc);
      L.w.repacked = repacked, L.w.repacked_bytes = rb;
    }
    size_t ws_bytes = tfq_workspace_bytes(&L.w, m);
    void *ws = ws_alloc(ws_bytes);
    for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++) {
      if (!tfq_isa_available((tfq_isa)isa)) continue;
      int st1 = tfq_linear_q8((tfq_isa)isa, &L.w, rows, (size_t)m * (size_t)k, (size_t)k, m,
                              y_rows, y_count, (size_t)n, ws, ws_bytes);
      int st2 = tfq_conv2d_q8((tfq_isa)isa, &L.w, x, x_count, &geo, y, y_count, ws, ws_bytes);
      char what[96];
      snprintf(what, sizeof what, "%s%s conv2d_q8 vs im2col rows", tfq_isa_name((tfq_isa)isa),
               pass ? " repacked" : "");
      report(st1 == TFQ_OK && st2 == TFQ_OK && same_bits(y_rows, y, m, n, (size_t)n), what, desc);
    }
    /* Errors: x one element short, a kernel taller than x, K not kh * kw * c, short output. */
    report(tfq_conv2d_q8(TFQ_ISA_AUTO, &L.w, x, x_count - 1, &geo, y, y_count, ws, ws_bytes) ==
           TFQ_ERR_BUFFER, "conv2d_q8 short x", desc);
    tfq_conv_geometry bad = geo;
    bad.kh = h + 1;
    report(tfq_conv2d_q8(TFQ_ISA_AUTO, &L.w, x, x_count, &bad, y, y_count, ws, ws_bytes) ==
           TFQ_ERR_SHAPE, "conv2d_q8 kernel taller than x", desc);
    bad = geo;
    bad.c = c + 1;
    report(tfq_conv2d_q8(TFQ_ISA_AUTO, &L.w, x, x_count, &bad, y, y_count, ws, ws_bytes) ==
           TFQ_ERR_SHAPE, "conv2d_q8 K != kh * kw * c", desc);
    report(tfq_conv2d_q8(TFQ_ISA_AUTO, &L.w, x, x_count, &geo, y, y_count - 1, ws, ws_bytes) ==
           TFQ_ERR_BUFFER, "conv2d_q8 short output", desc);
    report(tfq_conv2d_q8(TFQ_ISA_AUTO, &L.w, x, x_count, NULL, y, y_count, ws, ws_bytes) ==
           TFQ_ERR_NULL, "conv2d_q8 no geometry", desc);
    free(ws);
  }
  free(repacked);
  free(rows);
  free(y_rows);
  free(y);
  free(x);
  free_layer(&L);
}

/* tfq_dequantize_f32 against the test's own decoding: (value - zp) * scale, one rounding. */
static void check_dequantize(int bits, int sym, int f16, int32_t k, int32_t n, int32_t g) {
  layer L;
  make_layer(&L, bits, sym, f16, 0, k, n, g);
  size_t count = (size_t)k * (size_t)n;
  float *out = malloc(sizeof(float) * count);
  char desc[128];
  snprintf(desc, sizeof desc, "w%d sym%d f16%d K=%d N=%d G=%d", bits, sym, f16, (int)k, (int)n, (int)g);
  int ok = tfq_dequantize_f32(&L.w, out, count) == TFQ_OK;
  int32_t span = g < k ? g : k;
  for (int32_t j = 0; ok && j < n; j++)
    for (int32_t i = 0; ok && i < k; i++) {
      size_t gi = (size_t)(i / span) * (size_t)n + (size_t)j;
      int32_t v = L.value[(size_t)j * k + i] - (L.zp ? L.zp[gi] : 0);
      float want = (float)v * L.scale[gi];
      ok = memcmp(&want, &out[(size_t)i * n + j], sizeof want) == 0;
    }
  report(ok, "dequantize_f32 differs from (q - zp) * s", desc);
  report(tfq_dequantize_f32(&L.w, out, count - 1) == TFQ_ERR_BUFFER, "dequantize_f32 short output", desc);
  report(tfq_dequantize_f32(&L.w, NULL, count) == TFQ_ERR_NULL, "dequantize_f32 NULL output", desc);
  free(out);
  free_layer(&L);
}

/* tfq_expand_rows: dense rows (the first ceil(K*b/8) bytes of each padded row, whatever the bits
 * past K) expand to padded rows holding the same K weights and zero bits after them. */
static void check_expand(int bits, int32_t k, int32_t n) {
  layer L;
  make_layer(&L, bits, 1, 0, 0, k, n, k);
  size_t from = tfq_row_bytes_dense(k, bits), to = tfq_row_bytes(k, bits);
  uint8_t *dense = malloc((size_t)n * from), *out = malloc((size_t)n * to);
  for (int32_t r = 0; r < n; r++) memcpy(dense + (size_t)r * from, L.data + (size_t)r * to, from);
  char desc[96];
  snprintf(desc, sizeof desc, "w%d K=%d N=%d", bits, (int)k, (int)n);
  int ok = tfq_expand_rows(dense, (size_t)n * from, k, n, bits, out, (size_t)n * to) == TFQ_OK;
  int per = 8 / bits;
  for (int32_t r = 0; ok && r < n; r++)
    for (int32_t i = 0; ok && i < tfq_k_pad(k); i++) {
      int field = (out[(size_t)r * to + i / per] >> (bits * (i % per))) & ((1 << bits) - 1);
      int want = i < k ? (int)((uint32_t)L.value[(size_t)r * k + i] & ((1u << bits) - 1)) : 0;
      ok = field == want;
    }
  report(ok, "expand_rows: weights kept, padding zero", desc);
  report(tfq_expand_rows(dense, (size_t)n * from - 1, k, n, bits, out, (size_t)n * to) == TFQ_ERR_BUFFER,
         "expand_rows: short input", desc);
  report(tfq_expand_rows(dense, (size_t)n * from, k, n, bits, out, (size_t)n * to - 1) == TFQ_ERR_BUFFER,
         "expand_rows: short output", desc);
  report(tfq_expand_rows(dense, (size_t)n * from, k, n, 3, out, (size_t)n * to) == TFQ_ERR_SHAPE,
         "expand_rows: 3 bits", desc);
  free(dense);
  free(out);
  free_layer(&L);
}

int main(int argc, char **argv) {
  int cases = 600;
  const char *require = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--cases") == 0) cases = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--seed") == 0)
      rng ^= strtoull(argv[i + 1], NULL, 10) * 0x100000001B3ull;
    else if (strcmp(argv[i], "--require") == 0) require = argv[i + 1];
  }
  printf("isas:");
  for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++)
    if (tfq_isa_available((tfq_isa)isa)) printf(" %s", tfq_isa_name((tfq_isa)isa));
  printf("\n");
  if (require) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", require);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
      int found = 0;
      for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++)
        found |= strcmp(t, tfq_isa_name((tfq_isa)isa)) == 0 && tfq_isa_available((tfq_isa)isa);
      report(found, "required ISA not available", t);
    }
  }

  check_errors();
  for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++) {
    if (!tfq_isa_available((tfq_isa)isa)) continue;
    check_special_values((tfq_isa)isa);
    check_quantize_ties((tfq_isa)isa);
  }

  /* Fixed cases first: several N blocks of the SIMD kernels, per-channel with large K,
   * and G = 1 (reference fallback). */
  run_case(4, 1, 1, 1, 5, 4096, 150, 128);
  run_case(2, 0, 0, 1, 3, 3000, 330, 64);
  run_case(4, 0, 1, 0, 9, 1000, 70, 1000);
  run_case(2, 1, 0, 1, 2, 37, 5, 1);

  static const int32_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 31, 64, 65};
  for (int c = 0; c < cases; c++) {
    int bits = rnd() & 1 ? 4 : 2, sym = (int)(rnd() & 1), f16 = (int)(rnd() & 1);
    int with_bias = rnd_range(0, 3) != 0;
    int32_t m = ms[rnd() % (sizeof ms / sizeof ms[0])];
    int32_t k = rnd_range(0, 3) == 0 ? rnd_range(1, 40) : rnd_range(1, 400);
    int32_t n = rnd_range(1, 37);
    int32_t g;
    switch (rnd_range(0, 7)) {
      case 0: g = 32; break;
      case 1: g = 64; break;
      case 2: g = 128; break;
      case 3: g = k; break;
      case 4: g = k + rnd_range(1, 100); break;
      case 5: g = 32 * rnd_range(1, 6); break;
      case 6: g = rnd_range(1, 100); break;
      default: g = 0x7FFFFFFF; break;
    }
    if (m * k * n > 400000) m = 4; /* keep sanitizer and emulator runs short */
    run_case(bits, sym, f16, with_bias, m, k, n, g);
    if (c % 4 == 0) check_dequantize(bits, sym, f16, k, n, g);
    if (c % 4 == 1) check_expand(bits, k, n);
    if (c % 8 == 2) {  /* small convolutions: kernels 1..4, strides 1..3, C 1..40 */
      int32_t kh = rnd_range(1, 4), kw = rnd_range(1, 4), cc = rnd_range(1, 40);
      int32_t cg = rnd_range(0, 1) ? kh * kw * cc : 32 * rnd_range(1, 3);
      check_conv2d(bits, sym, rnd_range(1, 2), kh + rnd_range(0, 7), kw + rnd_range(0, 7), cc,
                   kh, kw, rnd_range(1, 3), rnd_range(1, 3), rnd_range(1, 40), cg);
    }
  }
  printf("kernel_test: %d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}
