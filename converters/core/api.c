/* Public entry points: check every argument against the lengths passed in, lay out the
 * workspace, pick the kernel (dispatch.c) and run it. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define TFQ_WS_MAGIC 0x53575154 /* "TQWS" */
#define TFQ_WS_HEADER 64       /* bytes; keeps the regions after it 64-byte aligned */
#define TFQ_WS_ALIGN 16        /* the workspace holds int32 and float regions */

const char *tfq_status_str(int status) {
  switch (status) {
    case TFQ_OK: return "ok";
    case TFQ_ERR_NULL: return "a required pointer is NULL";
    case TFQ_ERR_FORMAT: return "unsupported bits, symmetric, scale type or header";
    case TFQ_ERR_SHAPE: return "K, N, G or M out of range";
    case TFQ_ERR_BUFFER: return "a buffer is shorter than the shape requires";
    case TFQ_ERR_STRIDE: return "a row stride is smaller than the row";
    case TFQ_ERR_WORKSPACE: return "workspace missing, misaligned, too small or not prepared";
    case TFQ_ERR_ZERO_POINT: return "a zero point is outside 0..2^bits-1";
    case TFQ_ERR_ISA: return "the requested instruction set is not available";
    default: return "unknown status";
  }
}

static int tfq_mul_size(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return 0;
  *out = a * b;
  return 1;
}

static int tfq_add_size(size_t a, size_t b, size_t *out) {
  if (b > SIZE_MAX - a) return 0;
  *out = a + b;
  return 1;
}

int tfq_weights_from_header(tfq_packed_weights *w, const int32_t *header, size_t count) {
  if (!w || !header) return TFQ_ERR_NULL;
  if (count < TFQ_HEADER_COUNT || header[0] != TFQ_HEADER_MAGIC ||
      header[1] != TFQ_FORMAT_VERSION)
    return TFQ_ERR_FORMAT;
  w->bits = header[2];
  w->symmetric = header[3];
  w->k = header[4];
  w->n = header[5];
  w->group_size = header[6];
  w->scale_is_f16 = header[7];
  return TFQ_OK;
}

/* Fields and buffer lengths: everything memory safety depends on, checked on every call. */
static int tfq_weights_check_sizes(const tfq_packed_weights *w) {
  if (!w) return TFQ_ERR_NULL;
  if ((w->bits != 4 && w->bits != 2) || (w->symmetric != 0 && w->symmetric != 1) ||
      (w->scale_is_f16 != 0 && w->scale_is_f16 != 1))
    return TFQ_ERR_FORMAT;
  if (w->k < 1 || w->k > TFQ_MAX_K || w->n < 1 || w->n > TFQ_MAX_N || w->group_size < 1)
    return TFQ_ERR_SHAPE;
  if (!w->data || !w->scales || (!w->symmetric && !w->zero_points)) return TFQ_ERR_NULL;
  size_t groups = (size_t)tfq_num_groups(w->k, w->group_size);
  size_t data_need, params, scale_need;
  if (!tfq_mul_size((size_t)w->n, tfq_row_bytes(w->k, w->bits), &data_need) ||
      !tfq_mul_size((size_t)w->n, groups, &params) ||
      !tfq_mul_size(params, w->scale_is_f16 ? 2 : 4, &scale_need))
    return TFQ_ERR_SHAPE;
  if (w->data_bytes < data_need || w->scales_bytes < scale_need) return TFQ_ERR_BUFFER;
  if (w->bias && w->bias_count < (size_t)w->n) return TFQ_ERR_BUFFER;
  if (!w->symmetric && w->zero_points_bytes < params) return TFQ_ERR_BUFFER;
  if (w->repacked && w->repacked_bytes != tfq_n16_bytes(w)) return TFQ_ERR_BUFFER;
  return TFQ_OK;
}

size_t tfq_repacked_bytes(const tfq_packed_weights *w) {
  if (tfq_weights_check_sizes(w) != TFQ_OK || !tfq_n16_cpu()) return 0;
  return tfq_n16_bytes(w);
}

int tfq_repack(const tfq_packed_weights *w, void *out, size_t out_bytes) {
  int st = tfq_weights_check_sizes(w);
  if (st != TFQ_OK) return st;
  if (!out) return TFQ_ERR_NULL;
  size_t need = tfq_n16_bytes(w);
  if (need == 0) return TFQ_ERR_SHAPE;
  if (out_bytes < need) return TFQ_ERR_BUFFER;
  tfq_n16_repack(w, (uint8_t *)out);
  return TFQ_OK;
}

/* The column kernel runs where the resolved ISA is AVX-512 VNNI and the layer has its copy. */
static int tfq_use_n16(tfq_isa run, const tfq_packed_weights *w) {
#if defined(TFQ_BUILD_X86)
  return run == TFQ_ISA_AVX512VNNI && w->repacked != NULL && w->repacked_bytes != 0 && tfq_n16_cpu();
#elif defined(TFQ_BUILD_NEON)
  return run == TFQ_ISA_NEON_DOTPROD && w->repacked != NULL && w->repacked_bytes != 0 && tfq_n16_cpu();
#else
  (void)run, (void)w;
  return 0;
#endif
}

int tfq_expand_rows(const uint8_t *dense, size_t dense_bytes, int32_t k, int32_t n,
                    int32_t bits, uint8_t *out, size_t out_bytes) {
  if (!dense || !out) return TFQ_ERR_NULL;
  if ((bits != 4 && bits != 2) || k < 1 || k > TFQ_MAX_K || n < 1 || n > TFQ_MAX_N)
    return TFQ_ERR_SHAPE;
  size_t from = tfq_row_bytes_dense(k, bits), to = tfq_row_bytes(k, bits), need_in, need_out;
  if (!tfq_mul_size((size_t)n, from, &need_in) || !tfq_mul_size((size_t)n, to, &need_out))
    return TFQ_ERR_SHAPE;
  if (dense_bytes < need_in || out_bytes < need_out) return TFQ_ERR_BUFFER;
  int used = (int)(((size_t)k * (size_t)bits) % 8);  /* bits of the last byte that are weights */
  uint8_t last_mask = used ? (uint8_t)((1u << used) - 1u) : 0xFF;
  for (int32_t r = 0; r < n; r++) {
    uint8_t *o = out + (size_t)r * to;
    memcpy(o, dense + (size_t)r * from, from);
    o[from - 1] &= last_mask;
    memset(o + from, 0, to - from);
  }
  return TFQ_OK;
}

int tfq_dequantize_f32(const tfq_packed_weights *w, float *out, size_t out_count) {
  int st = tfq_weights_check_sizes(w);
  if (st != TFQ_OK) return st;
  if (!out) return TFQ_ERR_NULL;
  if (out_count / (size_t)w->n < (size_t)w->k) return TFQ_ERR_BUFFER;
  size_t row_bytes = tfq_row_bytes(w->k, w->bits);
  int32_t span = w->group_size < w->k ? w->group_size : w->k;
  for (int32_t n = 0; n < w->n; n++) {
    const uint8_t *row = w->data + (size_t)n * row_bytes;
    for (int32_t k = 0; k < w->k; k++) {
      int32_t g = k / span;
      int32_t q = tfq_weight_value_ref(row, k, w->bits, w->symmetric) - tfq_zero_point_at(w, n, g);
      out[(size_t)k * (size_t)w->n + (size_t)n] = (float)q * tfq_scale_at(w, n, g);
    }
  }
  return TFQ_OK;
}

int tfq_weights_check(const tfq_packed_weights *w) {
  int st = tfq_weights_check_sizes(w);
  if (st != TFQ_OK || w->symmetric) return st;
  size_t params = (size_t)w->n * (size_t)tfq_num_groups(w->k, w->group_size);
  uint8_t limit = (uint8_t)(1u << w->bits);
  for (size_t i = 0; i < params; i++)
    if (w->zero_points[i] >= limit) return TFQ_ERR_ZERO_POINT;
  return TFQ_OK;
}

/* m rows of k elements, row i at p + i * stride, all inside count elements. */
static int tfq_check_rows(const void *p, size_t count, size_t stride, int32_t m, int32_t k) {
  if (m == 0) return TFQ_OK;
  if (!p) return TFQ_ERR_NULL;
  if (stride < (size_t)k) return TFQ_ERR_STRIDE;
  size_t last, end;
  if (!tfq_mul_size((size_t)(m - 1), stride, &last) || !tfq_add_size(last, (size_t)k, &end) ||
      end > count)
    return TFQ_ERR_BUFFER;
  return TFQ_OK;
}

static int tfq_check_m(int32_t m) { return m < 0 || m > TFQ_MAX_M ? TFQ_ERR_SHAPE : TFQ_OK; }

/* Workspace: header | qa [m][kp] int8 | asum [groups][m4] int32 | scratch [m][k] int8 |
 * sa [m] float, each region starting on a 64-byte boundary of the workspace. */
typedef struct tfq_ws_layout {
  size_t qa, asum, scratch, sa, total;
  int32_t kp, groups, m4;
} tfq_ws_layout;

static int tfq_region(size_t *cursor, size_t count, size_t elem, size_t *offset) {
  size_t bytes, padded;
  if (!tfq_mul_size(count, elem, &bytes) || !tfq_add_size(bytes, 63, &padded)) return 0;
  *offset = *cursor;
  return tfq_add_size(*cursor, padded / 64 * 64, cursor);
}

static int tfq_ws_layout_for(const tfq_packed_weights *w, int32_t m, tfq_ws_layout *l) {
  l->kp = tfq_k_pad(w->k);
  l->groups = tfq_num_groups(w->k, w->group_size);
  l->m4 = (m + 3) / 4 * 4;
  size_t cursor = TFQ_WS_HEADER, asum_count;
  if (!tfq_mul_size((size_t)l->groups, (size_t)l->m4, &asum_count)) return 0;
  size_t qa_count, scratch_count;
  if (!tfq_mul_size((size_t)m, (size_t)l->kp, &qa_count) ||
      !tfq_mul_size((size_t)m, (size_t)w->k, &scratch_count))
    return 0;
  if (!tfq_region(&cursor, qa_count, 1, &l->qa) ||
      !tfq_region(&cursor, asum_count, sizeof(int32_t), &l->asum) ||
      !tfq_region(&cursor, scratch_count, 1, &l->scratch) ||
      !tfq_region(&cursor, (size_t)m, sizeof(float), &l->sa))
    return 0;
  l->total = cursor;
  return 1;
}

size_t tfq_workspace_bytes(const tfq_packed_weights *w, int32_t m) {
  tfq_ws_layout l;
  if (tfq_weights_check_sizes(w) != TFQ_OK || tfq_check_m(m) != TFQ_OK ||
      !tfq_ws_layout_for(w, m, &l))
    return 0;
  return l.total;
}

static int tfq_check_workspace(const void *ws, size_t bytes, const tfq_packed_weights *w,
                               int32_t m, tfq_ws_layout *l) {
  if (!tfq_ws_layout_for(w, m, l)) return TFQ_ERR_SHAPE;
  if (!ws || (uintptr_t)ws % TFQ_WS_ALIGN != 0 || bytes < l->total) return TFQ_ERR_WORKSPACE;
  return TFQ_OK;
}

/* The ISA that runs: AUTO asks dispatch.c; an explicit ISA must exist on this CPU, and runs
 * the reference for shapes or formats it has no kernel for. */
static int tfq_resolve(tfq_isa requested, const tfq_packed_weights *w, int f32_path,
                       tfq_isa *out) {
  if ((int)requested < 0 || requested >= TFQ_ISA_COUNT || !tfq_isa_available(requested))
    return TFQ_ERR_ISA;
  tfq_isa isa = requested == TFQ_ISA_AUTO ? tfq_select_isa_checked(w) : requested;
  const tfq_kernel_table *t = tfq_kernel_table_for(isa);
  int b2 = w->bits == 2, sym = w->symmetric;
  if (!tfq_simd_supports(w) || (f32_path ? !t->f32[b2][sym] : !t->q8[b2][sym]))
    isa = TFQ_ISA_REF;
  *out = isa;
  return TFQ_OK;
}

#define TFQ_TRY(expr)          \
  do {                         \
    int st_ = (expr);          \
    if (st_ != TFQ_OK) return st_; \
  } while (0)

int tfq_quantize_rows_q8(const float *x, size_t x_count, size_t x_stride, int32_t m, int32_t k,
                         int8_t *qa, size_t qa_count, size_t qa_stride, float *sa,
                         size_t sa_count) {
  TFQ_TRY(tfq_check_m(m));
  if (k < 1 || k > TFQ_MAX_K) return TFQ_ERR_SHAPE;
  TFQ_TRY(tfq_check_rows(x, x_count, x_stride, m, k));
  TFQ_TRY(tfq_check_rows(qa, qa_count, qa_stride, m, k));
  TFQ_TRY(tfq_check_rows(sa, sa_count, 1, m, 1));
  tfq_rows rows = {.x = x, .m = m, .k = k, .parts = 1, .stride = x_stride};
  tfq_quantizer(tfq_kernel_table_for(tfq_best_isa()))(&rows, qa, qa_stride, sa);
  return TFQ_OK;
}

/* Header of a prepared workspace, so a later tfq_matmul_q8_cols can refuse a workspace
 * prepared for other weights, rows or ISA instead of reading it in the wrong order. */
static void tfq_ws_header(int32_t h[8], tfq_isa isa, const tfq_packed_weights *w, int32_t m) {
  int32_t v[8] = {TFQ_WS_MAGIC, (int32_t)isa, w->bits, w->k, w->group_size, m,
                  tfq_use_n16(isa, w), 0};
  memcpy(h, v, sizeof v);
}

/* The column kernels' activation sums in their own instruction set (tfq_use_n16 implies it). */
#if defined(TFQ_BUILD_X86)
#define TFQ_N16_ASUM tfq_n16_asum_avx512
#elif defined(TFQ_BUILD_NEON)
#define TFQ_N16_ASUM tfq_n16_asum_neon
#else
#define TFQ_N16_ASUM tfq_n16_asum
#endif

static void tfq_prepare(tfq_isa isa, const tfq_packed_weights *w, const int8_t *qa,
                        size_t qa_stride, int32_t m, uint8_t *ws, const tfq_ws_layout *l) {
  int32_t h[8];
  tfq_ws_header(h, isa, w, m);
  memcpy(ws, h, sizeof h);
  const tfq_kernel_table *t = tfq_kernel_table_for(isa);
  if (tfq_use_n16(isa, w)) {
    tfq_prepare_q8_natural(qa, qa_stride, m, w->k, l->kp, (int8_t *)(ws + l->qa));
    TFQ_N16_ASUM((const int8_t *)(ws + l->qa), m, l->kp,
                 w->group_size < l->kp ? w->group_size : l->kp, l->groups,
                 (int32_t *)(ws + l->asum), l->m4);
  } else if (t->interleaved)
    (t->prepare ? t->prepare : tfq_prepare_q8_interleaved32)(
        qa, qa_stride, m, w->k, l->kp, w->bits, w->group_size, l->groups,
        (int8_t *)(ws + l->qa), (int32_t *)(ws + l->asum), l->m4);
  else
    tfq_prepare_q8_natural(qa, qa_stride, m, w->k, l->kp, (int8_t *)(ws + l->qa));
}

static void tfq_run_q8(tfq_isa isa, const tfq_packed_weights *w, const float *sa, int32_t m,
                       int32_t n_begin, int32_t n_end, float *y, size_t y_stride,
                       const uint8_t *ws, const tfq_ws_layout *l) {
  tfq_q8_job job = {
      .w = w,
      .kp = l->kp,
      .groups = l->groups,
      .span = w->group_size < l->kp ? w->group_size : l->kp,
      .row_bytes = tfq_row_bytes(w->k, w->bits),
      .qa = (const int8_t *)(ws + l->qa),
      .asum = (const int32_t *)(ws + l->asum),
      .m4 = l->m4,
      .sa = sa,
      .m = m,
      .n_begin = n_begin,
      .n_end = n_end,
      .y = y,
      .y_stride = y_stride,
  };
#if defined(TFQ_BUILD_X86)
  if (tfq_use_n16(isa, w)) {
    tfq_matmul_n16_avx512(&job);
    return;
  }
#elif defined(TFQ_BUILD_NEON)
  if (tfq_use_n16(isa, w)) {
    tfq_matmul_n16_neon_dotprod(&job);
    return;
  }
#endif
  tfq_kernel_table_for(isa)->q8[w->bits == 2][w->symmetric](&job);
}

int tfq_prepare_q8(tfq_isa isa, const tfq_packed_weights *w, const int8_t *qa, size_t qa_count,
                   size_t qa_stride, int32_t m, void *workspace, size_t workspace_bytes) {
  tfq_ws_layout l;
  tfq_isa run;
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  TFQ_TRY(tfq_check_rows(qa, qa_count, qa_stride, m, w->k));
  TFQ_TRY(tfq_resolve(isa, w, 0, &run));
  TFQ_TRY(tfq_check_workspace(workspace, workspace_bytes, w, m, &l));
  tfq_prepare(run, w, qa, qa_stride, m, (uint8_t *)workspace, &l);
  return TFQ_OK;
}

int tfq_matmul_q8_cols(tfq_isa isa, const tfq_packed_weights *w, const float *sa,
                       size_t sa_count, int32_t m, int32_t n_begin, int32_t n_end, float *y,
                       size_t y_count, size_t y_stride, const void *workspace,
                       size_t workspace_bytes) {
  tfq_ws_layout l;
  tfq_isa run;
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  if (n_begin < 0 || n_begin > n_end || n_end > w->n) return TFQ_ERR_SHAPE;
  TFQ_TRY(tfq_check_rows(sa, sa_count, 1, m, 1));
  TFQ_TRY(tfq_check_rows(y, y_count, y_stride, m, w->n));
  TFQ_TRY(tfq_resolve(isa, w, 0, &run));
  TFQ_TRY(tfq_check_workspace(workspace, workspace_bytes, w, m, &l));
  int32_t expect[8], found[8];
  tfq_ws_header(expect, run, w, m);
  memcpy(found, workspace, sizeof found);
  if (memcmp(expect, found, sizeof found) != 0) return TFQ_ERR_WORKSPACE;
  if (m == 0 || n_begin == n_end) return TFQ_OK;
  tfq_run_q8(run, w, sa, m, n_begin, n_end, y, y_stride, (const uint8_t *)workspace, &l);
  return TFQ_OK;
}

int tfq_matmul_q8(tfq_isa isa, const tfq_packed_weights *w, const int8_t *qa, size_t qa_count,
                  size_t qa_stride, const float *sa, size_t sa_count, int32_t m, float *y,
                  size_t y_count, size_t y_stride, void *workspace, size_t workspace_bytes) {
  tfq_ws_layout l;
  tfq_isa run;
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  TFQ_TRY(tfq_check_rows(qa, qa_count, qa_stride, m, w->k));
  TFQ_TRY(tfq_check_rows(sa, sa_count, 1, m, 1));
  TFQ_TRY(tfq_check_rows(y, y_count, y_stride, m, w->n));
  TFQ_TRY(tfq_resolve(isa, w, 0, &run));
  TFQ_TRY(tfq_check_workspace(workspace, workspace_bytes, w, m, &l));
  if (m == 0) return TFQ_OK;
  tfq_prepare(run, w, qa, qa_stride, m, (uint8_t *)workspace, &l);
  tfq_run_q8(run, w, sa, m, 0, w->n, y, y_stride, (const uint8_t *)workspace, &l);
  return TFQ_OK;
}

/* Quantize the rows (checked by the caller) into the workspace and multiply. */
static int tfq_linear_q8_rows(tfq_isa isa, const tfq_packed_weights *w, const tfq_rows *rows,
                              float *y, size_t y_count, size_t y_stride, void *workspace,
                              size_t workspace_bytes) {
  tfq_ws_layout l;
  tfq_isa run;
  int32_t m = rows->m;
  TFQ_TRY(tfq_check_rows(y, y_count, y_stride, m, w->n));
  TFQ_TRY(tfq_resolve(isa, w, 0, &run));
  TFQ_TRY(tfq_check_workspace(workspace, workspace_bytes, w, m, &l));
  if (m == 0) return TFQ_OK;
  uint8_t *ws = (uint8_t *)workspace;
  float *sa = (float *)(ws + l.sa);
  /* The column kernel reads natural order: quantize straight into its rows (the prepare step
   * then only zeroes the padding); the other kernels reorder from the scratch rows. */
  int n16 = tfq_use_n16(run, w);
  int8_t *qa = n16 ? (int8_t *)(ws + l.qa) : (int8_t *)(ws + l.scratch);
  size_t stride = n16 ? (size_t)l.kp : (size_t)w->k;
  tfq_quantizer(tfq_kernel_table_for(run))(rows, qa, stride, sa);
  tfq_prepare(run, w, qa, stride, m, ws, &l);
  tfq_run_q8(run, w, sa, m, 0, w->n, y, y_stride, ws, &l);
  return TFQ_OK;
}

int tfq_linear_q8(tfq_isa isa, const tfq_packed_weights *w, const float *x, size_t x_count,
                  size_t x_stride, int32_t m, float *y, size_t y_count, size_t y_stride,
                  void *workspace, size_t workspace_bytes) {
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  TFQ_TRY(tfq_check_rows(x, x_count, x_stride, m, w->k));
  tfq_rows rows = {.x = x, .m = m, .k = w->k, .parts = 1, .stride = x_stride};
  return tfq_linear_q8_rows(isa, w, &rows, y, y_count, y_stride, workspace, workspace_bytes);
}

int tfq_linear_q8_static(tfq_isa isa, const tfq_packed_weights *w, const float *x, size_t x_count,
                         size_t x_stride, int32_t m, float scale, float *y, size_t y_count,
                         size_t y_stride, void *workspace, size_t workspace_bytes) {
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  TFQ_TRY(tfq_check_rows(x, x_count, x_stride, m, w->k));
  if (!(scale > 0.0f) || !isfinite(scale)) return TFQ_ERR_FORMAT;
  tfq_rows rows = {.x = x, .m = m, .k = w->k, .parts = 1, .stride = x_stride, .fixed_scale = scale};
  return tfq_linear_q8_rows(isa, w, &rows, y, y_count, y_stride, workspace, workspace_bytes);
}

int tfq_conv2d_q8(tfq_isa isa, const tfq_packed_weights *w, const float *x, size_t x_count,
                  const tfq_conv_geometry *g, float *y, size_t y_count, void *workspace,
                  size_t workspace_bytes) {
  TFQ_TRY(tfq_weights_check_sizes(w));
  if (!g || !x) return TFQ_ERR_NULL;
  if (g->b < 0 || g->h < 1 || g->w < 1 || g->c < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 ||
      g->sw < 1 || g->kh > g->h || g->kw > g->w)
    return TFQ_ERR_SHAPE;
  int64_t taps = (int64_t)g->kh * g->kw;  /* below 2^62; times c only once it is <= K */
  if (taps > w->k || taps * g->c != (int64_t)w->k) return TFQ_ERR_SHAPE;
  int64_t ho = (g->h - g->kh) / g->sh + 1, wo = (g->w - g->kw) / g->sw + 1;
  if (ho * wo > TFQ_MAX_M || (g->b > 0 && ho * wo * g->b > TFQ_MAX_M)) return TFQ_ERR_SHAPE;
  size_t need;  /* b * h * w * c elements of x */
  if (!tfq_mul_size((size_t)g->b, (size_t)g->h, &need) ||
      !tfq_mul_size(need, (size_t)g->w, &need) || !tfq_mul_size(need, (size_t)g->c, &need))
    return TFQ_ERR_SHAPE;
  if (need > x_count) return TFQ_ERR_BUFFER;
  tfq_rows rows = {.x = x, .m = (int32_t)(g->b * ho * wo), .k = w->k, .parts = g->kh,
                   .h = g->h, .w = g->w, .c = g->c, .sh = g->sh, .sw = g->sw,
                   .ho = (int32_t)ho, .wo = (int32_t)wo};
  return tfq_linear_q8_rows(isa, w, &rows, y, y_count, (size_t)w->n, workspace, workspace_bytes);
}

int tfq_linear_f32(tfq_isa isa, const tfq_packed_weights *w, const float *x, size_t x_count,
                   size_t x_stride, int32_t m, float *y, size_t y_count, size_t y_stride) {
  tfq_isa run;
  TFQ_TRY(tfq_weights_check_sizes(w));
  TFQ_TRY(tfq_check_m(m));
  TFQ_TRY(tfq_check_rows(x, x_count, x_stride, m, w->k));
  TFQ_TRY(tfq_check_rows(y, y_count, y_stride, m, w->n));
  TFQ_TRY(tfq_resolve(isa, w, 1, &run));
  if (m == 0) return TFQ_OK;
  tfq_f32_job job = {
      .w = w,
      .groups = tfq_num_groups(w->k, w->group_size),
      .row_bytes = tfq_row_bytes(w->k, w->bits),
      .x = x,
      .x_stride = x_stride,
      .m = m,
      .y = y,
      .y_stride = y_stride,
  };
#if defined(TFQ_BUILD_X86)
  if (tfq_use_n16(run, w)) {
    tfq_linear_f32_n16_avx512(&job);
    return TFQ_OK;
  }
#endif
  tfq_kernel_table_for(run)->f32[w->bits == 2][w->symmetric](&job);
  return TFQ_OK;
}
