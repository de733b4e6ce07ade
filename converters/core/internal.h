/* Shared by the kernel files only: validated job descriptions and the per-ISA kernel table. */
#ifndef TFQ_INTERNAL_H
#define TFQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tfq/kernels.h"

/* One int8-activation matmul over output columns n_begin..n_end-1, arguments validated.
 * qa holds the activations prepared for the kernel's ISA: M rows of kp bytes, zero padded
 * past K (natural order for ref; the interleaved-32 order of prepare_q8_interleaved32 for
 * SIMD).  asum[g * m4 + m] is the int32 sum of row m's activations over group g (SIMD only),
 * m4 = M rounded up to 4 so a tile of 4 rows loads 4 consecutive values. */
typedef struct tfq_q8_job {
  const tfq_packed_weights *w;
  int32_t kp;        /* K padded to TFQ_K_ALIGN */
  int32_t groups;
  int32_t span;      /* elements of a full group, min(G, kp): G >= K means one group */
  size_t row_bytes;
  const int8_t *qa;
  const int32_t *asum;
  int32_t m4;
  const float *sa;
  int32_t m;
  int32_t n_begin;
  int32_t n_end;
  float *y;
  size_t y_stride;
} tfq_q8_job;

/* Float-activation matmul, arguments validated; x rows are read up to K only. */
typedef struct tfq_f32_job {
  const tfq_packed_weights *w;
  int32_t groups;
  size_t row_bytes;
  const float *x;
  size_t x_stride;
  int32_t m;
  float *y;
  size_t y_stride;
} tfq_f32_job;

typedef void (*tfq_q8_kernel)(const tfq_q8_job *job);
typedef void (*tfq_f32_kernel)(const tfq_f32_job *job);
/* Where the M activation rows of K floats are, validated: row i is `parts` runs of K / parts
 * floats, run p at part_stride * p past the row's start (tfq_row_cursor).  Plain rows (wo 0):
 * parts 1, row i at x + i * stride.  The patches of a valid 2-D convolution over NHWC x
 * [B, H, W, C]: row (b, oh, ow), run p the kw * C floats of kernel row p (parts = kh, possibly
 * 1), so a patch is quantized where it lies, without an im2col copy. */
typedef struct tfq_rows {
  const float *x;
  int32_t m, k, parts;
  size_t stride;                         /* plain rows */
  int32_t h, w, c, sh, sw, ho, wo;       /* patches: wo >= 1 */
  float fixed_scale;                     /* > 0: every row's scale (a calibrated range); 0: per row */
} tfq_rows;

/* Walks the rows in order without a division per row: row points at the current row's first
 * run, part_stride separates its runs. */
typedef struct tfq_row_cursor {
  const tfq_rows *r;
  const float *row;
  size_t part_stride;
  int32_t b, oh, ow, left;  /* left: rows after the current one */
} tfq_row_cursor;

static inline const float *tfq_patch_start(const tfq_rows *r, int32_t b, int32_t oh,
                                           int32_t ow) {
  return r->x + (((size_t)b * (size_t)r->h + (size_t)oh * (size_t)r->sh) * (size_t)r->w +
                 (size_t)ow * (size_t)r->sw) * (size_t)r->c;
}

static inline tfq_row_cursor tfq_rows_begin(const tfq_rows *r) {
  tfq_row_cursor c = {r, r->x, r->wo ? (size_t)r->w * (size_t)r->c : 0, 0, 0, 0, r->m - 1};
  return c;
}

static inline void tfq_rows_next(tfq_row_cursor *c) {
  const tfq_rows *r = c->r;
  if (c->left-- <= 0) return;  /* no pointer past the last row is ever formed */
  if (r->wo == 0) {
    c->row += r->stride;
    return;
  }
  if (++c->ow == r->wo) {
    c->ow = 0;
    if (++c->oh == r->ho) c->oh = 0, c->b++;
  }
  c->row = tfq_patch_start(r, c->b, c->oh, c->ow);
}

typedef void (*tfq_quantize_fn)(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa);

/* The scale of a row in the numerics contract: max |x| / 127, or 1 for a row of zeros. */
static inline float tfq_row_scale(float max_abs) { return max_abs > 0.0f ? max_abs / 127.0f : 1.0f; }

/* Patches of this many floats or fewer, made of short runs, may be gathered into one row. */
#define TFQ_GATHER_MAX_K 64

/* The row walk of every quantizer, inlined into each with its own primitives (so they are
 * inlined too): per row the maximum |x| over its runs, the scale, then each run quantized by
 * quantize(x, k, s, 1 / s, out).  With a gather (NULL: never), a row of several runs of at most
 * gather_run floats and K <= TFQ_GATHER_MAX_K (a 3x3 convolution over one channel: three runs
 * of 3) is first copied into one contiguous row by gather, which returns its maximum and may
 * write up to 16 floats past K: one maximum and one quantization per row instead of one per
 * run, each mostly masked tails. */
static inline __attribute__((always_inline)) void tfq_quantize_rows_loop(
    const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa,
    float (*max_abs)(const float *x, int32_t k, float running),
    void (*quantize)(const float *x, int32_t k, float s, float inv, int8_t *out),
    float (*gather)(const tfq_row_cursor *cur, int32_t run, int32_t parts, float *row),
    int32_t gather_run) {
  const int32_t run = rows->k / rows->parts;
  const int gathered = gather && rows->parts > 1 && run <= gather_run && rows->k <= TFQ_GATHER_MAX_K;
  float row[TFQ_GATHER_MAX_K + 16];
  tfq_row_cursor cur = tfq_rows_begin(rows);
  for (int32_t i = 0; i < rows->m; i++, tfq_rows_next(&cur)) {
    int8_t *out = qa + (size_t)i * qa_stride;
    float m = 0.0f;
    if (gathered)
      m = gather(&cur, run, rows->parts, row);
    else if (!(rows->fixed_scale > 0.0f))
      for (int32_t p = 0; p < rows->parts; p++) m = max_abs(cur.row + (size_t)p * cur.part_stride, run, m);
    float s = rows->fixed_scale > 0.0f ? rows->fixed_scale : tfq_row_scale(m), inv = 1.0f / s;
    if (gathered)
      quantize(row, rows->k, s, inv, out);
    else
      for (int32_t p = 0; p < rows->parts; p++)
        quantize(cur.row + (size_t)p * cur.part_stride, run, s, inv, out + (size_t)p * (size_t)run);
    sa[i] = s;
  }
}
typedef void (*tfq_prepare_fn)(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                               int32_t kp, int32_t bits, int32_t group_size, int32_t groups,
                               int8_t *out, int32_t *asum, int32_t m4);

/* Kernels of one ISA.  Index [bits == 2][symmetric]; a NULL entry means "use the reference".
 * interleaved: the q8 kernels read activations in the interleaved-32 order, written by
 * prepare (NULL: tfq_prepare_q8_interleaved32); otherwise in natural order.
 * quantize: row-wise activation quantization, bit-identical to the reference (NULL: ref). */
typedef struct tfq_kernel_table {
  tfq_isa isa;
  int interleaved;
  tfq_q8_kernel q8[2][2];
  tfq_f32_kernel f32[2][2];
  tfq_quantize_fn quantize;
  tfq_prepare_fn prepare;
} tfq_kernel_table;

extern const tfq_kernel_table tfq_kernels_ref;
#if defined(TFQ_BUILD_X86)
extern const tfq_kernel_table tfq_kernels_avx2;
extern const tfq_kernel_table tfq_kernels_avx512vnni;
/* quantize_avx2.c and matmul_avx2.c; the VNNI table reuses them (every VNNI CPU has AVX2). */
void tfq_quantize_rows_q8_avx2(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa);
void tfq_quantize_rows_q8_avx512(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa);
void tfq_prepare_q8_interleaved32_avx2(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                                       int32_t kp, int32_t bits, int32_t group_size,
                                       int32_t groups, int8_t *out, int32_t *asum, int32_t m4);
void tfq_linear_f32_q4_sym_avx2(const tfq_f32_job *job);
void tfq_linear_f32_q4_asym_avx2(const tfq_f32_job *job);
void tfq_linear_f32_q2_sym_avx2(const tfq_f32_job *job);
void tfq_linear_f32_q2_asym_avx2(const tfq_f32_job *job);
#endif
#if defined(TFQ_BUILD_NEON)
extern const tfq_kernel_table tfq_kernels_neon;
extern const tfq_kernel_table tfq_kernels_neon_dotprod;
#endif

/* dispatch.c */
/* Column-interleaved weights (repack_n16.c) and their AVX-512 kernel (matmul_avx512_n16.c). */
size_t tfq_n16_bytes(const tfq_packed_weights *w);       /* 0: the layout does not apply */
size_t tfq_n16_block_bytes(const tfq_packed_weights *w); /* one block of 16 channels */
/* Inside a block (repack_n16.c): chunks of up to TFQ_N16_CHUNK groups, each their metadata
 * (16 scales and 16 offsets per group), zeros to a multiple of 64 bytes, then their weight
 * vectors; so every 64-byte vector is aligned and the block is read front to back. */
#define TFQ_N16_CHUNK 4
static inline size_t tfq_n16_meta_bytes(const tfq_packed_weights *w) {  /* one group's */
  return 16u * (w->scale_is_f16 ? 2u : 4u) + 16u;
}
/* The metadata bytes that open the chunk starting at group g (a multiple of TFQ_N16_CHUNK). */
static inline size_t tfq_n16_chunk_meta_bytes(const tfq_packed_weights *w, int32_t groups,
                                              int32_t g) {
  int32_t c = groups - g < TFQ_N16_CHUNK ? groups - g : TFQ_N16_CHUNK;
  return ((size_t)c * tfq_n16_meta_bytes(w) + 63u) / 64u * 64u;
}
/* Entering group g of a block read front to back with *p: at a chunk's first group, *chunk
 * becomes the chunk's metadata and *p steps over it.  Returns group g's metadata.  Every
 * reader of the layout (the AVX-512 and NEON kernels) walks a block through this. */
static inline const uint8_t *tfq_n16_enter_group(const tfq_packed_weights *w, int32_t groups,
                                                 int32_t g, const uint8_t **p,
                                                 const uint8_t **chunk) {
  if (g % TFQ_N16_CHUNK == 0) *chunk = *p, *p += tfq_n16_chunk_meta_bytes(w, groups, g);
  return *chunk + (size_t)(g % TFQ_N16_CHUNK) * tfq_n16_meta_bytes(w);
}
void tfq_n16_repack(const tfq_packed_weights *w, uint8_t *out);
void tfq_n16_asum(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                  int32_t *asum, int32_t m4);
int tfq_n16_cpu(void);                                  /* AVX-512 F + VNNI present */
/* The loop of tfq_n16_asum, shared by the reference and the SIMD versions (inlined into each,
 * so `sum` is inlined too): asum[g * m4 + i] = sum(row i's bytes of group g, count), zero for
 * the padding rows m..m4-1.  kp and every group are whole 16-byte steps. */
static inline __attribute__((always_inline)) void tfq_n16_asum_loop(
    const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups, int32_t *asum,
    int32_t m4, int32_t (*sum)(const int8_t *p, int32_t count)) {
  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span, k1 = g == groups - 1 ? kp : k0 + span;
    for (int32_t i = 0; i < m4; i++)
      asum[(size_t)g * (size_t)m4 + (size_t)i] =
          i < m ? sum(qa + (size_t)i * (size_t)kp + (size_t)k0, k1 - k0) : 0;
  }
}

/* tfq_n16_asum in the kernels' instruction sets. */
#if defined(TFQ_BUILD_NEON)
void tfq_matmul_n16_neon_dotprod(const tfq_q8_job *job);
void tfq_n16_asum_neon(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                       int32_t *asum, int32_t m4);
#endif
#if defined(TFQ_BUILD_X86)
void tfq_matmul_n16_avx512(const tfq_q8_job *job);
void tfq_n16_asum_avx512(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                         int32_t *asum, int32_t m4);
void tfq_linear_f32_n16_avx512(const tfq_f32_job *job);
#endif

const tfq_kernel_table *tfq_kernel_table_for(tfq_isa isa);
int tfq_simd_supports(const tfq_packed_weights *w);
tfq_isa tfq_select_isa_checked(const tfq_packed_weights *w); /* w already validated */
tfq_isa tfq_best_isa(void); /* fastest available (or TFQ_KERNELS_ISA), ignoring shapes */

/* quantize_ref.c */
void tfq_quantize_rows_q8_ref(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa);
/* A kernel table's quantizer (its entry, or the reference where it has none). */
static inline tfq_quantize_fn tfq_quantizer(const tfq_kernel_table *t) {
  return t->quantize ? t->quantize : tfq_quantize_rows_q8_ref;
}
void tfq_prepare_q8_natural(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                            int32_t kp, int8_t *out);
void tfq_prepare_q8_interleaved32(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                                  int32_t kp, int32_t bits, int32_t group_size, int32_t groups,
                                  int8_t *out, int32_t *asum, int32_t m4);

/* matmul_ref.c */
void tfq_matmul_q8_ref(const tfq_q8_job *job);
void tfq_linear_f32_ref(const tfq_f32_job *job);
/* The reference's float path blocked for the compiler to vectorize (matmul_f32_blocked.c; the
 * NEON tables' float entries). */
void tfq_linear_f32_blocked(const tfq_f32_job *job);

/* IEEE binary16 to float32, exact for every input (normals, subnormals, inf, NaN). */
static inline float tfq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    /* Subnormal half: renormalise; value = man * 2^-24. */
    int e = -1;
    do {
      man <<= 1;
      e++;
    } while ((man & 0x400u) == 0);
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* Scale s_w[g][n] in float32 whatever the storage. */
static inline float tfq_scale_at(const tfq_packed_weights *w, int32_t n, int32_t g) {
  size_t i = (size_t)g * (size_t)w->n + (size_t)n;
  if (w->scale_is_f16) return tfq_f16_to_f32(((const uint16_t *)w->scales)[i]);
  return ((const float *)w->scales)[i];
}

/* The integer subtracted from the stored field so that weight = field - offset:
 * asymmetric: the zero point; symmetric: 0 (the SIMD kernels use their own offset). */
static inline int32_t tfq_zero_point_at(const tfq_packed_weights *w, int32_t n, int32_t g) {
  if (w->symmetric) return 0;
  return w->zero_points[(size_t)g * (size_t)w->n + (size_t)n];
}

/* A stored field (0 .. 2^bits - 1) as the value it encodes: sign-extended when symmetric. */
static inline int32_t tfq_field_value(int32_t field, int32_t bits, int32_t symmetric) {
  return symmetric && field >= (1 << (bits - 1)) ? field - (1 << bits) : field;
}

/* Stored field of weight k of a packed row (format.h), sign-extended when symmetric: the
 * weight is this minus tfq_zero_point_at.  The reference kernels and tfq_dequantize_f32. */
static inline int32_t tfq_weight_value_ref(const uint8_t *row, int32_t k, int32_t bits,
                                           int32_t symmetric) {
  int32_t field;
  if (bits == 4)
    field = (row[k / 2] >> (4 * (k % 2))) & 0xF;
  else
    field = (row[k / 4] >> (2 * (k % 4))) & 0x3;
  return tfq_field_value(field, bits, symmetric);
}

#endif /* TFQ_INTERNAL_H */
