/* AVX2 versions of the activation side (compiled with -mavx2).  Bit-identical to
 * quantize_ref.c: vdivps and vroundps (nearest-even) are the IEEE operations that the scalar
 * x / s and nearbyintf perform (the multiply by 1 / s below divides wherever it could
 * differ); the reference calls nearbyintf from libm per element on baseline x86-64, which
 * costs as much as the whole matmul of a small layer at M = 1. */
#include <immintrin.h>
#include <string.h>

#include "internal.h"

/* Lanes 0..n-1 of 8 (n in 1..8): rows of a few floats (a 3x3 convolution over one channel
 * has runs of 3) run the vector formula instead of a scalar division per element. */
static inline __m256i tfq_tail_mask(int32_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Below this scale 1 / s may overflow: such rows divide every element. */
#define TFQ_RECIPROCAL_MIN_SCALE 0x1p-125f
#define TFQ_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* a macro: an immediate at -O0 */

/* 8 floats to rounded, clamped int32 lanes; NaN (from inf / inf) becomes 0 as in the reference.
 * max/min return their second operand when one is NaN, so the clamp keeps NaN for the mask.
 * The quotient x / s costs a vdivps per 8 elements; x * (1 / s) is within 1.5 * 2^-23 * |x / s|
 * (at most 2.3e-5, as |x / s| <= 127) of the correctly rounded quotient, so the two round to
 * different integers only if a half-integer lies within 2.3e-5 of the product.  Vectors with a
 * lane that close to a tie (1e-4, |q - round(q)| is exact) divide instead, about one in 600
 * vectors of random data: bit-identical to the reference at a fraction of the cost. */
static inline __m256i tfq_quantize8(__m256 x, __m256 s, __m256 inv, int divide) {
  __m256 r;
  if (divide) {
    r = _mm256_round_ps(_mm256_div_ps(x, s), TFQ_NEAREST);
  } else {
    __m256 q = _mm256_mul_ps(x, inv);
    r = _mm256_round_ps(q, TFQ_NEAREST);
    __m256 dist = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(q, r));
    if (_mm256_movemask_ps(_mm256_cmp_ps(dist, _mm256_set1_ps(0.5f - 1e-4f), _CMP_GE_OQ)))
      r = _mm256_round_ps(_mm256_div_ps(x, s), TFQ_NEAREST);
  }
  r = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-127.0f), r));
  r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
  return _mm256_cvtps_epi32(r);
}

/* max(lanes of v, running): no lane is NaN, and the running max (never NaN) goes in last. */
static inline float tfq_hmax(__m256 v, float running) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float lanes_max = _mm_cvtss_f32(h);
  return lanes_max > running ? lanes_max : running;
}

/* max(|x|, running) over k floats: a NaN |x| yields the running max, as the scalar `if (a > max)`. */
static float tfq_max_abs(const float *x, int32_t k, float max_abs) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  /* Four chains: one vmaxps chain is bound by its latency, not by the loads. */
  __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  int32_t j = 0;
  for (; j + 32 <= k; j += 32) {
    m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), m0);
    m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j + 8), abs_mask), m1);
    m2 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j + 16), abs_mask), m2);
    m3 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j + 24), abs_mask), m3);
  }
  __m256 vmax = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));  /* no NaN in m* */
  for (; j + 8 <= k; j += 8)
    vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), vmax);
  if (j < k)  /* masked-off lanes load as 0, which leaves a maximum of |x| unchanged */
    vmax = _mm256_max_ps(_mm256_and_ps(_mm256_maskload_ps(x + j, tfq_tail_mask(k - j)), abs_mask),
                         vmax);
  return tfq_hmax(vmax, max_abs);
}

/* The first n (1..7) bytes of v to out, in pieces of 4, 2 and 1 (no call to memcpy). */
static inline void tfq_store_bytes(int8_t *out, __m128i v, int32_t n) {
  uint64_t b = (uint64_t)_mm_cvtsi128_si64(v);
  if (n & 4) memcpy(out, &b, 4), out += 4, b >>= 32;
  if (n & 2) memcpy(out, &b, 2), out += 2, b >>= 16;
  if (n & 1) *out = (int8_t)(b & 0xFF);
}

/* k floats quantized with scale s (inv = 1 / s) into out. */
static void tfq_quantize_run(const float *x, int32_t k, float s, float inv, int8_t *out) {
  __m256 vs = _mm256_set1_ps(s), vinv = _mm256_set1_ps(inv);
  int divide = !(s >= TFQ_RECIPROCAL_MIN_SCALE);
  int32_t j = 0;
  for (; j + 32 <= k; j += 32) {
    __m256i a = tfq_quantize8(_mm256_loadu_ps(x + j), vs, vinv, divide);
    __m256i b = tfq_quantize8(_mm256_loadu_ps(x + j + 8), vs, vinv, divide);
    __m256i c = tfq_quantize8(_mm256_loadu_ps(x + j + 16), vs, vinv, divide);
    __m256i d = tfq_quantize8(_mm256_loadu_ps(x + j + 24), vs, vinv, divide);
    /* packs work per 128-bit lane; the permute restores element order. */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(void *)(out + j), p);
  }
  for (; j + 8 <= k; j += 8) {  /* K = 144 and the like: 16 more, not per element */
    __m256i a = tfq_quantize8(_mm256_loadu_ps(x + j), vs, vinv, divide);
    __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    _mm_storel_epi64((__m128i *)(void *)(out + j), _mm_packs_epi16(p, p));
  }
  if (j < k) {  /* the last 1..7: the same vector formula, masked load, bytes copied out */
    __m256i a = tfq_quantize8(_mm256_maskload_ps(x + j, tfq_tail_mask(k - j)), vs, vinv, divide);
    __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    tfq_store_bytes(out + j, _mm_packs_epi16(p, p), k - j);
  }
}

/* A patch of `parts` runs of run (1..8) floats into row, for tfq_quantize_rows_loop: each run
 * by a masked load (never past the run in x) and a whole 8-float store: the next run
 * overwrites the tail, the last one's lands in the slack.  (A masked store is microcoded on
 * AMD: it cost a third of the quantizer.)  Returns max |x|, from the registers: reading row
 * back now would wait for the stores. */
static float tfq_gather8(const tfq_row_cursor *cur, int32_t run, int32_t parts, float *row) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i run_mask = tfq_tail_mask(run);
  __m256 vmax = _mm256_setzero_ps();
  for (int32_t p = 0; p < parts; p++) {
    __m256 v = _mm256_maskload_ps(cur->row + (size_t)p * cur->part_stride, run_mask);
    _mm256_storeu_ps(row + p * run, v);
    vmax = _mm256_max_ps(_mm256_and_ps(v, abs_mask), vmax);
  }
  return tfq_hmax(vmax, 0.0f);
}

void tfq_quantize_rows_q8_avx2(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa) {
  tfq_quantize_rows_loop(rows, qa, qa_stride, sa, tfq_max_abs, tfq_quantize_run, tfq_gather8, 8);
}

/* Interleaved-32 order (see tfq_prepare_q8_interleaved32) by one byte shuffle per 128-bit
 * lane and one cross-lane permute per chunk; group sums by maddubs/madd with ones. */
void tfq_prepare_q8_interleaved32_avx2(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                                       int32_t kp, int32_t bits, int32_t group_size,
                                       int32_t groups, int8_t *out, int32_t *asum, int32_t m4) {
  /* int4: per lane evens then odds; then qwords (lane0 evens, lane1 evens, lane0 odds, ...). */
  const __m256i shuf4 = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  /* int2: per lane the four k % 4 planes as dwords; then dwords (0, 4, 1, 5, 2, 6, 3, 7). */
  const __m256i shuf2 = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                         0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i dwords2 = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  /* The caller runs SIMD kernels only for G % 32 == 0 or one group, so groups are whole chunks. */
  int32_t chunks = kp / 32, per_group = groups == 1 ? chunks : group_size / 32;
  for (int32_t i = 0; i < m; i++) {
    const int8_t *src = qa + (size_t)i * qa_stride;
    int8_t *dst = out + (size_t)i * (size_t)kp;
    for (int32_t g = 0; g < groups; g++) {
      int32_t c1 = g == groups - 1 ? chunks : (g + 1) * per_group;
      __m256i sum = _mm256_setzero_si256();
      for (int32_t c = g * per_group; c < c1; c++) {
        __m256i v;
        if (32 * c + 32 <= k) {
          v = _mm256_loadu_si256((const __m256i *)(src + 32 * c));
        } else { /* the last chunk: never read past K, zero the padding */
          int8_t tmp[32] = {0};
          memcpy(tmp, src + 32 * c, (size_t)(k - 32 * c));
          v = _mm256_loadu_si256((const __m256i *)tmp);
        }
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
        if (bits == 4)
          v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, shuf4), 0xD8);
        else
          v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, shuf2), dwords2);
        _mm256_storeu_si256((__m256i *)(dst + 32 * c), v);
      }
      __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
      asum[(size_t)g * (size_t)m4 + (size_t)i] = _mm_cvtsi128_si32(s);
    }
  }
  for (int32_t g = 0; g < groups; g++)
    for (int32_t i = m; i < m4; i++) asum[(size_t)g * (size_t)m4 + (size_t)i] = 0;
}
