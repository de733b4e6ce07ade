/* aarch64 column kernel over the column-interleaved weights of repack_n16.c (compiled with
 * -march=armv8.2-a+dotprod, run only where HWCAP_ASIMDDP is set).  A 64-byte vector of the
 * copy is four 16-byte registers of 4 channels x 4 k; the indexed SDOT multiplies each
 * channel's 4 weight bytes by 4 activations of one row (a lane of the activation register), so
 * a group's exact int32 sums land one per lane, as in the AVX-512 kernel, with no horizontal
 * reduction per group.  Fields are offset binary 0..15, which SDOT's signed bytes hold.  The
 * float epilogue is a multiply then an add per group in the reference order (this file is
 * compiled with -ffp-contract=off like the rest): bit-identical to the reference. */
#include <arm_neon.h>

#include "internal.h"

#define TFQ_INLINE static inline __attribute__((always_inline))

TFQ_INLINE void tfq_neon_n16_tile(const tfq_q8_job *job, const uint8_t *block, int32_t n0,
                                  int32_t lo_lane, int32_t hi_lane, int32_t m0, const int MR,
                                  const int BITS) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = job->kp, groups = job->groups, span = job->span;
  const size_t ssz = w->scale_is_f16 ? 2 : 4;
  const uint8x16_t mask = vdupq_n_u8(BITS == 4 ? 0x0F : 0x03);
  float32x4_t total[4][4];
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < 4; j++) total[r][j] = vdupq_n_f32(0.0f);
  const uint8_t *p = block, *chunk = block;
  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span, k1 = g == groups - 1 ? kp : k0 + span;
    const uint8_t *gm = tfq_n16_enter_group(w, groups, g, &p, &chunk);
    int32x4_t acc[4][4];
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < 4; j++) acc[r][j] = vdupq_n_s32(0);
    for (int32_t kv = k0; kv < k1; kv += 16) {
      int8x16_t a[4];
      for (int r = 0; r < MR; r++) a[r] = vld1q_s8(job->qa + (size_t)(m0 + r) * (size_t)kp + (size_t)kv);
      for (int c = 0; c < 4; c++) {
        int8x16_t u[4];
        for (int j = 0; j < 4; j++) {
          uint8x16_t v;
          if (BITS == 4) {
            v = vld1q_u8(p + (c / 2) * 64 + 16 * j);
            v = (c & 1) ? vshrq_n_u8(v, 4) : vandq_u8(v, mask);
          } else {
            v = vld1q_u8(p + 16 * j);
            v = c == 0 ? vandq_u8(v, mask) : c == 1 ? vandq_u8(vshrq_n_u8(v, 2), mask)
              : c == 2 ? vandq_u8(vshrq_n_u8(v, 4), mask) : vshrq_n_u8(v, 6);
          }
          u[j] = vreinterpretq_s8_u8(v);
        }
        for (int r = 0; r < MR; r++)
          for (int j = 0; j < 4; j++) {
            switch (c) {  /* the lane index of vdotq_laneq_s32 must be a constant */
              case 0: acc[r][j] = vdotq_laneq_s32(acc[r][j], u[j], a[r], 0); break;
              case 1: acc[r][j] = vdotq_laneq_s32(acc[r][j], u[j], a[r], 1); break;
              case 2: acc[r][j] = vdotq_laneq_s32(acc[r][j], u[j], a[r], 2); break;
              default: acc[r][j] = vdotq_laneq_s32(acc[r][j], u[j], a[r], 3); break;
            }
          }
      }
      p += BITS == 4 ? 128 : 64;
    }
    float32x4_t s[4];
    for (int j = 0; j < 4; j++)
      s[j] = ssz == 2 ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)gm + 4 * j)))
                      : vld1q_f32((const float *)gm + 4 * j);
    uint8x16_t offb = vld1q_u8(gm + 16 * ssz);
    uint16x8_t o_lo = vmovl_u8(vget_low_u8(offb)), o_hi = vmovl_u8(vget_high_u8(offb));
    int32x4_t off[4] = {vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(o_lo))),
                        vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(o_lo))),
                        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(o_hi))),
                        vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(o_hi)))};
    const int32_t *asum = job->asum + (size_t)g * (size_t)job->m4 + (size_t)m0;
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < 4; j++) {
        int32x4_t accg = vsubq_s32(acc[r][j], vmulq_n_s32(off[j], asum[r]));
        total[r][j] = vaddq_f32(total[r][j], vmulq_f32(s[j], vcvtq_f32_s32(accg)));
      }
  }
  for (int r = 0; r < MR; r++) {
    float out[16];
    float32x4_t sa = vdupq_n_f32(job->sa[m0 + r]);
    for (int j = 0; j < 4; j++) vst1q_f32(out + 4 * j, vmulq_f32(sa, total[r][j]));
    float *y = job->y + (size_t)(m0 + r) * job->y_stride + (size_t)n0;
    for (int32_t l = lo_lane; l < hi_lane; l++) {
      float o = out[l];
      if (w->bias) o = o + w->bias[n0 + l];
      y[l] = o;
    }
  }
}

TFQ_INLINE void tfq_neon_n16_run(const tfq_q8_job *job, const int BITS) {
  const size_t block_bytes = tfq_n16_block_bytes(job->w);
  const uint8_t *base = (const uint8_t *)job->w->repacked;
  for (int32_t b = job->n_begin / 16; b * 16 < job->n_end; b++) {
    int32_t n0 = b * 16;
    int32_t lo = job->n_begin > n0 ? job->n_begin - n0 : 0;
    int32_t hi = job->n_end - n0 < 16 ? job->n_end - n0 : 16;
    const uint8_t *block = base + (size_t)b * block_bytes;
    int32_t m0 = 0;
    for (; job->m - m0 >= 4; m0 += 4) tfq_neon_n16_tile(job, block, n0, lo, hi, m0, 4, BITS);
    if (job->m - m0 >= 2) tfq_neon_n16_tile(job, block, n0, lo, hi, m0, 2, BITS), m0 += 2;
    if (job->m - m0 >= 1) tfq_neon_n16_tile(job, block, n0, lo, hi, m0, 1, BITS);
  }
}

/* count (a multiple of 16) int8 values: ADDLV widens each 16-byte step's sum (at most
 * 16 * 128 in magnitude) to 16 bits. */
static int32_t tfq_sum_bytes_addlv(const int8_t *p, int32_t count) {
  int32_t s = 0;
  for (int32_t k = 0; k < count; k += 16) s += vaddlvq_s8(vld1q_s8(p + k));
  return s;
}

void tfq_n16_asum_neon(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                       int32_t *asum, int32_t m4) {
  tfq_n16_asum_loop(qa, m, kp, span, groups, asum, m4, tfq_sum_bytes_addlv);
}

void tfq_matmul_n16_neon_dotprod(const tfq_q8_job *job) {
  if (job->w->bits == 4)
    tfq_neon_n16_run(job, 4);
  else
    tfq_neon_n16_run(job, 2);
}
