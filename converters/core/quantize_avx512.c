/* AVX-512 activation quantizer (compiled with -mavx512f), for the AVX-512 VNNI kernel table.
 * Bit-identical to quantize_ref.c by doing what it does: x / s by vdivps (the IEEE quotient
 * of the scalar x / s), clamped to [-127, 127] in float, rounded to nearest-even by the
 * conversion's embedded rounding (nearbyintf in the default mode), NaN to 0.  The AVX2
 * quantizer multiplies by 1 / s and divides only vectors near a rounding tie, because vdivps
 * ymm is slow; on Zen 4 vdivps zmm plus a masked conversion and a saturating narrow store
 * measured 1.2-1.4x faster than that (tfq_bench-style loop, rows of 144 to 2304 floats), and
 * there are no ties to check.  Every row length takes the same formula: the last 1..15
 * elements through masked loads and stores, which never touch memory past the row. */
#include <immintrin.h>

#include "internal.h"

static inline __mmask16 tfq_first(int32_t n) {  /* lanes 0..n-1, n in 0..16 */
  return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}

/* max(|x|, running) over k floats.  vmaxps returns its second operand when either is NaN, so
 * with the running maxima second a NaN |x| leaves them unchanged, as the scalar `if (a > max)`. */
static float tfq_max_abs16(const float *x, int32_t k, float running) {
  __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;  /* four chains: latency-bound otherwise */
  int32_t j = 0;
  for (; j + 64 <= k; j += 64) {
    m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), m0);
    m1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j + 16)), m1);
    m2 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j + 32)), m2);
    m3 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j + 48)), m3);
  }
  for (; j < k; j += 16)  /* masked-off lanes load as 0, which leaves a maximum of |x| unchanged */
    m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tfq_first(k - j), x + j)), m0);
  float lanes_max = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
  return lanes_max > running ? lanes_max : running;
}

/* k floats quantized with scale s into out (dividing: inv is for the AVX2 quantizer). */
static void tfq_quantize_run16(const float *x, int32_t k, float scale, float inv, int8_t *out) {
  (void)inv;
  const __m512 s = _mm512_set1_ps(scale), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
  for (int32_t j = 0; j < k; j += 16) {
    __mmask16 live = tfq_first(k - j);
    __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(live, x + j), s);
    __mmask16 number = _mm512_cmp_ps_mask(q, q, _CMP_ORD_Q);
    q = _mm512_max_ps(lo, _mm512_min_ps(hi, q));
    __m512i v = _mm512_maskz_cvt_roundps_epi32(number, q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm512_mask_cvtsepi32_storeu_epi8(out + j, live, v);  /* |v| <= 127: the narrowing is exact */
  }
}

/* A patch of `parts` runs of run (1..16) floats into row, for tfq_quantize_rows_loop: each run
 * by a masked load (never past it in x) and a whole 16-float store; the next run overwrites
 * the tail, the last one's lands in the slack of row.  Returns max |x|, from the registers:
 * reading row back now would wait for the stores. */
static float tfq_gather16(const tfq_row_cursor *cur, int32_t run, int32_t parts, float *row) {
  const __mmask16 run_mask = tfq_first(run);
  __m512 vmax = _mm512_setzero_ps();
  for (int32_t p = 0; p < parts; p++) {
    __m512 v = _mm512_maskz_loadu_ps(run_mask, cur->row + (size_t)p * cur->part_stride);
    _mm512_storeu_ps(row + p * run, v);
    vmax = _mm512_max_ps(_mm512_abs_ps(v), vmax);
  }
  return _mm512_reduce_max_ps(vmax);
}

void tfq_quantize_rows_q8_avx512(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa) {
  tfq_quantize_rows_loop(rows, qa, qa_stride, sa, tfq_max_abs16, tfq_quantize_run16, tfq_gather16, 16);
}
