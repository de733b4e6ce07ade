/* Activation side of the int8 path: row-wise dynamic quantization (the numerics contract)
 * and the copies of q_a that the kernels read. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* max(|x|, running) over k floats (a NaN |x| leaves it unchanged). */
static float tfq_max_abs_ref(const float *x, int32_t k, float running) {
  for (int32_t j = 0; j < k; j++) {
    float a = fabsf(x[j]);
    if (a > running) running = a;
  }
  return running;
}

/* k floats quantized with scale s into out.  x / s, not x * inv: the contract divides. */
static void tfq_quantize_run_ref(const float *x, int32_t k, float s, float inv, int8_t *out) {
  (void)inv;
  for (int32_t j = 0; j < k; j++) {
    /* x / s (not x * (1/s)) and round-half-even, exactly as the NumPy contract. */
    float r = nearbyintf(x[j] / s);
    if (r > 127.0f) r = 127.0f;
    if (r < -127.0f) r = -127.0f;
    if (r != r) r = 0.0f; /* NaN input: a defined value instead of an undefined cast */
    out[j] = (int8_t)r;
  }
}

void tfq_quantize_rows_q8_ref(const tfq_rows *rows, int8_t *qa, size_t qa_stride, float *sa) {
  tfq_quantize_rows_loop(rows, qa, qa_stride, sa, tfq_max_abs_ref, tfq_quantize_run_ref, NULL, 0);
}

void tfq_prepare_q8_natural(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                            int32_t kp, int8_t *out) {
  for (int32_t i = 0; i < m; i++) {
    int8_t *dst = out + (size_t)i * (size_t)kp;
    const int8_t *src = qa + (size_t)i * qa_stride;
    if (src != dst) memcpy(dst, src, (size_t)k);  /* already in place: quantized into out */
    memset(dst + k, 0, (size_t)(kp - k));
  }
}

/* Interleaved-32 order: within each chunk of 32 activations, the order in which the SIMD
 * kernels unpack 32 packed weights without shuffles.
 *   int4: one 16-byte load gives low nibbles (even k) and high nibbles (odd k), so the chunk
 *         holds a[0], a[2], ..., a[30], then a[1], a[3], ..., a[31].
 *   int2: one 8-byte load gives four 2-bit planes (k % 4 == 0, 1, 2, 3) of 8 elements each,
 *         so the chunk holds a[0], a[4], ..., a[28], then a[1], a[5], ..., then planes 2, 3.
 * Elements at k >= K are zero, which is what keeps the padding of weight rows out of every
 * sum.  asum holds the per-group sums that turn unsigned weight fields into signed weights:
 * SUM a * (field - offset) = SUM a * field - offset * SUM a. */
void tfq_prepare_q8_interleaved32(const int8_t *qa, size_t qa_stride, int32_t m, int32_t k,
                                  int32_t kp, int32_t bits, int32_t group_size, int32_t groups,
                                  int8_t *out, int32_t *asum, int32_t m4) {
  for (int32_t i = 0; i < m; i++) {
    const int8_t *src = qa + (size_t)i * qa_stride;
    int8_t *dst = out + (size_t)i * (size_t)kp;
    for (int32_t c = 0; c < kp; c += 32) {
      for (int32_t e = 0; e < 32; e++) {
        /* e is the position in the chunk; s the element it holds. */
        int32_t s = bits == 4 ? c + 2 * (e % 16) + e / 16 : c + 4 * (e % 8) + e / 8;
        dst[c + e] = s < k ? src[s] : 0;
      }
    }
    for (int32_t g = 0; g < groups; g++) {
      int32_t k0 = g * group_size;
      int32_t k1 = k0 + group_size < k ? k0 + group_size : k;
      int32_t sum = 0;
      for (int32_t j = k0; j < k1; j++) sum += src[j];
      asum[(size_t)g * (size_t)m4 + (size_t)i] = sum;
    }
  }
  for (int32_t g = 0; g < groups; g++)
    for (int32_t i = m; i < m4; i++) asum[(size_t)g * (size_t)m4 + (size_t)i] = 0;
}
