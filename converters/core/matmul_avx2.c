/* AVX2 kernels (compiled with -mavx2 -mfma -mf16c; chosen at run time by dispatch.c).
 * int8-activation path: matmul_x86_tile.h with maddubs + madd as the byte dot product.
 * Float-activation path: weights dequantized in natural order, fused multiply-adds. */
#include <immintrin.h>

#include "internal.h"

/* u * a pairs summed to int16 by maddubs, then pairs of those to int32 by madd with ones. */
#define TFQ_X86_DOT(acc, u, a) \
  ((acc) = _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (a)), \
                                                     _mm256_set1_epi16(1))))
/* Two chunks: the int16 products of both are added before one madd (|sum| <= 4 * 15 * 128
 * fits int16), one madd and one add fewer per pair of chunks. */
#define TFQ_X86_DOT2(acc, u0, a0, u1, a1)                                                  \
  ((acc) = _mm256_add_epi32(                                                              \
       (acc), _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16((u0), (a0)),        \
                                                 _mm256_maddubs_epi16((u1), (a1))),       \
                                _mm256_set1_epi16(1))))
#include "matmul_x86_tile.h"

static void tfq_matmul_q4_sym_avx2(const tfq_q8_job *job) { tfq_x86_run(job, 4, 1); }
static void tfq_matmul_q4_asym_avx2(const tfq_q8_job *job) { tfq_x86_run(job, 4, 0); }
static void tfq_matmul_q2_sym_avx2(const tfq_q8_job *job) { tfq_x86_run(job, 2, 1); }
static void tfq_matmul_q2_asym_avx2(const tfq_q8_job *job) { tfq_x86_run(job, 2, 0); }

/* 32 weights of one chunk as int8 (value - zero point), natural order k = 0..31. */
TFQ_INLINE void tfq_avx2_weights32(const uint8_t *p, const int BITS, const int SYM, int32_t zp,
                                   __m128i *lo16, __m128i *hi16) {
  __m128i e0, e1;
  if (BITS == 4) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(b, m);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    e0 = _mm_unpacklo_epi8(lo, hi);
    e1 = _mm_unpackhi_epi8(lo, hi);
  } else {
    __m128i d = _mm_loadl_epi64((const __m128i *)p);
    __m128i m = _mm_set1_epi8(0x03);
    __m128i c0 = _mm_and_si128(d, m);
    __m128i c1 = _mm_and_si128(_mm_srli_epi16(d, 2), m);
    __m128i c2 = _mm_and_si128(_mm_srli_epi16(d, 4), m);
    __m128i c3 = _mm_and_si128(_mm_srli_epi16(d, 6), m);
    __m128i t01 = _mm_unpacklo_epi8(c0, c1);
    __m128i t23 = _mm_unpacklo_epi8(c2, c3);
    e0 = _mm_unpacklo_epi16(t01, t23);
    e1 = _mm_unpackhi_epi16(t01, t23);
  }
  if (SYM) {
    /* Two's complement field to value: (field ^ half) - half. */
    __m128i h = _mm_set1_epi8(BITS == 4 ? 8 : 2);
    *lo16 = _mm_sub_epi8(_mm_xor_si128(e0, h), h);
    *hi16 = _mm_sub_epi8(_mm_xor_si128(e1, h), h);
  } else {
    __m128i z = _mm_set1_epi8((char)zp);
    *lo16 = _mm_sub_epi8(e0, z);
    *hi16 = _mm_sub_epi8(e1, z);
  }
}

TFQ_INLINE __m256 tfq_avx2_cvt8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

TFQ_INLINE float tfq_avx2_hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* One output channel n for rows m0..m0+MR-1 of float activations; four accumulators per row
 * so consecutive fused multiply-adds do not wait on each other. */
TFQ_INLINE void tfq_avx2_f32_tile(const tfq_f32_job *job, int32_t m0, int32_t n, const int MR,
                                  const int BITS, const int SYM) {
  const tfq_packed_weights *w = job->w;
  const int32_t k = w->k, groups = job->groups;
  const int32_t span = w->group_size < k ? w->group_size : k;
  const uint8_t *row = w->data + (size_t)n * job->row_bytes;
  const float *x[2];
  float total[2] = {0.0f, 0.0f};
  for (int r = 0; r < MR; r++) x[r] = job->x + (size_t)(m0 + r) * job->x_stride;
  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span;
    int32_t k1 = k0 + span < k ? k0 + span : k;
    int32_t zp = tfq_zero_point_at(w, n, g);
    __m256 acc[2][4];
    for (int r = 0; r < MR; r++)
      for (int q = 0; q < 4; q++) acc[r][q] = _mm256_setzero_ps();
    int32_t kk = k0;
    /* Full chunks of 32 inside the group; k0 is a multiple of 32 (dispatch.c checks G). */
    for (; kk + 32 <= k1; kk += 32) {
      __m128i lo16, hi16;
      tfq_avx2_weights32(row + (size_t)kk * BITS / 8, BITS, SYM, zp, &lo16, &hi16);
      __m256 wq[4] = {tfq_avx2_cvt8(lo16), tfq_avx2_cvt8(_mm_srli_si128(lo16, 8)),
                      tfq_avx2_cvt8(hi16), tfq_avx2_cvt8(_mm_srli_si128(hi16, 8))};
      for (int r = 0; r < MR; r++)
        for (int q = 0; q < 4; q++)
          acc[r][q] = _mm256_fmadd_ps(wq[q], _mm256_loadu_ps(x[r] + kk + 8 * q), acc[r][q]);
    }
    for (int r = 0; r < MR; r++) {
      __m256 s = _mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]),
                               _mm256_add_ps(acc[r][2], acc[r][3]));
      float part = tfq_avx2_hsum_ps(s);
      for (int32_t t = kk; t < k1; t++) {
        int32_t field = BITS == 4 ? (row[t / 2] >> (4 * (t % 2))) & 0xF
                                  : (row[t / 4] >> (2 * (t % 4))) & 0x3;
        if (SYM && field >= (1 << (BITS - 1))) field -= 1 << BITS;
        part += x[r][t] * (float)(field - zp);
      }
      total[r] += tfq_scale_at(w, n, g) * part;
    }
  }
  for (int r = 0; r < MR; r++) {
    float out = total[r];
    if (w->bias) out += w->bias[n];
    job->y[(size_t)(m0 + r) * job->y_stride + (size_t)n] = out;
  }
}

TFQ_INLINE void tfq_avx2_f32_run(const tfq_f32_job *job, const int BITS, const int SYM) {
  int32_t m0 = 0;
  for (; m0 + 2 <= job->m; m0 += 2)
    for (int32_t n = 0; n < job->w->n; n++) tfq_avx2_f32_tile(job, m0, n, 2, BITS, SYM);
  for (; m0 < job->m; m0++)
    for (int32_t n = 0; n < job->w->n; n++) tfq_avx2_f32_tile(job, m0, n, 1, BITS, SYM);
}

void tfq_linear_f32_q4_sym_avx2(const tfq_f32_job *job) { tfq_avx2_f32_run(job, 4, 1); }
void tfq_linear_f32_q4_asym_avx2(const tfq_f32_job *job) { tfq_avx2_f32_run(job, 4, 0); }
void tfq_linear_f32_q2_sym_avx2(const tfq_f32_job *job) { tfq_avx2_f32_run(job, 2, 1); }
void tfq_linear_f32_q2_asym_avx2(const tfq_f32_job *job) { tfq_avx2_f32_run(job, 2, 0); }

const tfq_kernel_table tfq_kernels_avx2 = {
    .isa = TFQ_ISA_AVX2,
    .interleaved = 1,
    .q8 = {{tfq_matmul_q4_asym_avx2, tfq_matmul_q4_sym_avx2},
           {tfq_matmul_q2_asym_avx2, tfq_matmul_q2_sym_avx2}},
    .f32 = {{tfq_linear_f32_q4_asym_avx2, tfq_linear_f32_q4_sym_avx2},
            {tfq_linear_f32_q2_asym_avx2, tfq_linear_f32_q2_sym_avx2}},
    .quantize = tfq_quantize_rows_q8_avx2,
    .prepare = tfq_prepare_q8_interleaved32_avx2,
};

