/*
 * aarch64 int8-activation kernel body shared by matmul_neon.c and matmul_neon_dotprod.c, which
 * differ only in TFQ_NEON_DOT16(acc, u, a), the dot product of 16 weight bytes with 16
 * activation bytes into 4 int32 lanes (plain NEON: widening multiplies + pairwise add; with
 * the dot-product extension: one SDOT).
 *
 * Same scheme as the x86 kernel (matmul_x86_tile.h): a symmetric field is flipped to offset
 * binary (xor of the packed bytes with 0x88 or 0xAA flips the top bit of every field), so
 * every weight is an unsigned field 0..15 that fits a signed byte, and
 *     ACC_g = SUM a * u  -  offset * SUM a
 * with the activation sums of the workspace.  Unpacking a chunk of 32 weights is one 16-byte
 * load, an and and a shift (int4: low nibbles = even k, high = odd k), or one 8-byte load and
 * four shift/and pairs (int2: the four 2-bit planes), matching the interleaved-32 activation
 * order, so the inner loop has no shuffles.  Plain NEON: |u * a| <= 15 * 128, two products
 * summed in int16 stay below 2^15.
 *
 * Tiles of MR rows x NR weight rows (MR * NR <= 8 accumulators); the epilogue is scalar and
 * in the reference order (compiled with -ffp-contract=off), so results are bit-identical.
 */
#ifndef TFQ_MATMUL_NEON_TILE_H
#define TFQ_MATMUL_NEON_TILE_H

#include <arm_neon.h>

#include "internal.h"

#ifndef TFQ_NEON_DOT16
#error "define TFQ_NEON_DOT16(acc, u, a) before including matmul_neon_tile.h"
#endif

#define TFQ_INLINE static inline __attribute__((always_inline))

#define TFQ_NEON_BLOCK_BYTES (128 * 1024)

/* 32 unsigned weight fields of one chunk, in interleaved-32 order. */
TFQ_INLINE void tfq_neon_unpack(const uint8_t *row, int32_t k, const int BITS, const int SYM,
                                int8x16_t *u0, int8x16_t *u1) {
  if (BITS == 4) {
    uint8x16_t b = vld1q_u8(row + k / 2);
    if (SYM) b = veorq_u8(b, vdupq_n_u8(0x88));
    *u0 = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F)));
    *u1 = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
  } else {
    uint8x8_t d = vld1_u8(row + k / 4);
    if (SYM) d = veor_u8(d, vdup_n_u8(0xAA));
    uint8x8_t m = vdup_n_u8(0x03);
    uint8x8_t c0 = vand_u8(d, m);
    uint8x8_t c1 = vand_u8(vshr_n_u8(d, 2), m);
    uint8x8_t c2 = vand_u8(vshr_n_u8(d, 4), m);
    uint8x8_t c3 = vshr_n_u8(d, 6);
    *u0 = vreinterpretq_s8_u8(vcombine_u8(c0, c1));
    *u1 = vreinterpretq_s8_u8(vcombine_u8(c2, c3));
  }
}

/* Rows m0..m0+MR-1 times output channels n0..n0+NR-1; slot l = j * MR + r. */
TFQ_INLINE void tfq_neon_tile(const tfq_q8_job *job, int32_t m0, int32_t n0, const int MR,
                              const int NR, const int BITS, const int SYM) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = job->kp, groups = job->groups, span = job->span;
  const uint8_t *wrow[8];
  const int8_t *arow[4];
  float total[8] = {0.0f};
  for (int j = 0; j < NR; j++) wrow[j] = w->data + (size_t)(n0 + j) * job->row_bytes;
  for (int r = 0; r < MR; r++) arow[r] = job->qa + (size_t)(m0 + r) * (size_t)kp;

  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span;
    int32_t k1 = g == groups - 1 ? kp : k0 + span;
    int32x4_t acc[8];
    for (int l = 0; l < 8; l++) acc[l] = vdupq_n_s32(0);
    for (int32_t k = k0; k < k1; k += 32) {
      int8x16_t a0[4], a1[4];
      for (int r = 0; r < MR; r++) {
        a0[r] = vld1q_s8(arow[r] + k);
        a1[r] = vld1q_s8(arow[r] + k + 16);
      }
      for (int j = 0; j < NR; j++) {
        int8x16_t u0, u1;
        tfq_neon_unpack(wrow[j], k, BITS, SYM, &u0, &u1);
        for (int r = 0; r < MR; r++) {
          TFQ_NEON_DOT16(acc[j * MR + r], u0, a0[r]);
          TFQ_NEON_DOT16(acc[j * MR + r], u1, a1[r]);
        }
      }
    }
    for (int j = 0; j < NR; j++) {
      int32_t offset = SYM ? (BITS == 4 ? 8 : 2) : tfq_zero_point_at(w, n0 + j, g);
      float scale = tfq_scale_at(w, n0 + j, g);
      for (int r = 0; r < MR; r++) {
        int l = j * MR + r;
        int32_t asum = job->asum[(size_t)g * (size_t)job->m4 + (size_t)(m0 + r)];
        int32_t accg = vaddvq_s32(acc[l]) - offset * asum;
        float term = scale * (float)accg;
        total[l] = total[l] + term;
      }
    }
  }
  for (int j = 0; j < NR; j++) {
    for (int r = 0; r < MR; r++) {
      float out = job->sa[m0 + r] * total[j * MR + r];
      if (w->bias) out = out + w->bias[n0 + j];
      job->y[(size_t)(m0 + r) * job->y_stride + (size_t)(n0 + j)] = out;
    }
  }
}

TFQ_INLINE void tfq_neon_cols(const tfq_q8_job *job, int32_t m0, int32_t n_lo, int32_t n_hi,
                              const int MR, const int NR, const int BITS, const int SYM) {
  int32_t n0 = n_lo;
  for (; n0 + NR <= n_hi; n0 += NR) tfq_neon_tile(job, m0, n0, MR, NR, BITS, SYM);
  for (; n0 < n_hi; n0++) tfq_neon_tile(job, m0, n0, MR, 1, BITS, SYM);
}

/* Same row tiling as x86: 4 x 2, then 2 x 4, then 1 x 8 (8 accumulators each). */
TFQ_INLINE void tfq_neon_run(const tfq_q8_job *job, const int BITS, const int SYM) {
  int32_t block = (int32_t)(TFQ_NEON_BLOCK_BYTES / job->row_bytes) / 8 * 8;
  if (block < 8) block = 8;
  for (int32_t nb = job->n_begin; nb < job->n_end; nb += block) {
    int32_t ne = job->n_end - nb > block ? nb + block : job->n_end;
    int32_t m0 = 0;
    while (m0 < job->m) {
      int32_t rem = job->m - m0;
      if (rem >= 4) {
        tfq_neon_cols(job, m0, nb, ne, 4, 2, BITS, SYM);
        m0 += 4;
      } else if (rem >= 2) {
        tfq_neon_cols(job, m0, nb, ne, 2, 4, BITS, SYM);
        m0 += 2;
      } else {
        tfq_neon_cols(job, m0, nb, ne, 1, 8, BITS, SYM);
        m0 += 1;
      }
    }
  }
}

#endif /* TFQ_MATMUL_NEON_TILE_H */
