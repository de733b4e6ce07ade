/*
 * x86 int8-activation kernel body shared by matmul_avx2.c and matmul_avx512vnni.c, which
 * differ only in the macros they define before including this file:
 *   TFQ_X86_DOT(acc, u, a)            4-way byte dot product into int32 lanes (required;
 *                                     AVX2: maddubs + madd + add, VNNI: one vpdpbusd);
 *   TFQ_X86_DOT2(acc, u0, a0, u1, a1) two chunks at once, where that is cheaper (optional);
 *   TFQ_X86_AND_XOR(b, mask, flip)    (b & mask) ^ flip in one instruction (optional).
 *
 * Why unsigned weights: both instructions multiply unsigned bytes by signed bytes.  The
 * activations are signed, so the weights become the unsigned side: a symmetric field is
 * flipped to offset binary (u = field ^ 8 = value + 8 for int4, ^ 2 for int2), an asymmetric
 * field already is unsigned, and the kernel computes
 *     ACC_g = SUM a * u  -  offset * SUM a      (offset = 8, 2, or the zero point)
 * with SUM a per group precomputed in the workspace.  This costs one xor per weight chunk
 * (none with vpternlogd), shared by all rows of a tile, where the usual sign trick (|a| times
 * sign-adjusted w) costs two instructions per row and chunk.  maddubs cannot saturate:
 * |u * a| <= 15 * 128, so a pair sums to at most 3840.
 *
 * Unpacking 32 weights is one broadcast load, one variable shift and one and: int4 puts the
 * 16 bytes in both 128-bit lanes and shifts the upper lane right by 4 (low nibbles = even k,
 * high nibbles = odd k); int2 puts the 8 bytes in all four 64-bit lanes and shifts them by
 * 0, 2, 4, 6.  The activations were stored in that same order (prepare_q8_interleaved32),
 * so no shuffle runs in the inner loop.
 *
 * Tiles: MR activation rows x NR weight rows share each unpacked weight chunk; MR * NR <= 8
 * accumulators plus the inputs fit the 16 ymm registers.  At the end of a group the 8
 * accumulators are reduced to one vector of 8 exact int32 sums and the float epilogue runs
 * 8 (m, n) pairs at once, lane by lane in the order of the reference (a multiply, then an
 * add; the file is compiled with -ffp-contract=off).  Scales, zero points and activation
 * sums of a group arrive by contiguous loads (scales are stored [groups][N] for this).
 */
#ifndef TFQ_MATMUL_X86_TILE_H
#define TFQ_MATMUL_X86_TILE_H

#include <immintrin.h>
#include <string.h>

#include "internal.h"

#ifndef TFQ_X86_DOT
#error "define TFQ_X86_DOT(acc, u, a) before including matmul_x86_tile.h"
#endif

#define TFQ_INLINE static inline __attribute__((always_inline))

/* Weight rows kept hot in L2 while all row tiles of the activations pass over them. */
#define TFQ_X86_BLOCK_BYTES (128 * 1024)

/* The 32 weight fields at p as unsigned bytes in interleaved-32 order, flipped to offset
 * binary when symmetric.  TFQ_X86_AND_XOR, where the ISA has a three-input logic instruction,
 * does the mask and the flip in one. */
TFQ_INLINE __m256i tfq_x86_unpack(const uint8_t *p, const int BITS, const int SYM) {
  __m256i b;
  if (BITS == 4) {
    b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    b = _mm256_srlv_epi64(b, _mm256_setr_epi64x(0, 0, 4, 4));
  } else {
    int64_t v;
    memcpy(&v, p, sizeof v);
    b = _mm256_srlv_epi64(_mm256_set1_epi64x(v), _mm256_setr_epi64x(0, 2, 4, 6));
  }
  const __m256i mask = _mm256_set1_epi8(BITS == 4 ? 0x0F : 0x03);
  if (!SYM) return _mm256_and_si256(b, mask);
  const __m256i flip = _mm256_set1_epi8(BITS == 4 ? 0x08 : 0x02);
#ifdef TFQ_X86_AND_XOR
  return TFQ_X86_AND_XOR(b, mask, flip);
#else
  return _mm256_xor_si256(_mm256_and_si256(b, mask), flip);
#endif
}

/* Lane l of the result is the sum of the 8 int32 lanes of v[l], for l < count (else 0). */
TFQ_INLINE __m256i tfq_x86_hsum(const __m256i *v, const int count) {
  const __m256i z = _mm256_setzero_si256();
  __m256i t0 = _mm256_hadd_epi32(v[0], count > 1 ? v[1] : z);
  __m256i t1 = count > 2 ? _mm256_hadd_epi32(v[2], count > 3 ? v[3] : z) : z;
  __m256i u0 = _mm256_hadd_epi32(t0, t1);
  if (count <= 4) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(u0), _mm256_extracti128_si256(u0, 1));
    return _mm256_inserti128_si256(z, s, 0);
  }
  __m256i t2 = _mm256_hadd_epi32(v[4], count > 5 ? v[5] : z);
  __m256i t3 = count > 6 ? _mm256_hadd_epi32(v[6], count > 7 ? v[7] : z) : z;
  __m256i u1 = _mm256_hadd_epi32(t2, t3);
  __m256i lo = _mm256_permute2x128_si256(u0, u1, 0x20);
  __m256i hi = _mm256_permute2x128_si256(u0, u1, 0x31);
  return _mm256_add_epi32(lo, hi);
}

/* Lane l = r * NR + j of a tile holds (row m0 + r, channel n0 + j).  The per-group values
 * come from contiguous loads spread over the lanes by one permute: per-channel values (scale,
 * zero point: NR consecutive entries of a [groups][N] array) go to lane l from entry l % NR,
 * per-row values (activation sums, s_a) from entry l / NR.  Lanes past MR * NR are unused. */
TFQ_INLINE __m256i tfq_x86_spread(const int NR, const int per_channel) {
  if (per_channel)
    return _mm256_setr_epi32(0 % NR, 1 % NR, 2 % NR, 3 % NR, 4 % NR, 5 % NR, 6 % NR, 7 % NR);
  return _mm256_setr_epi32(0 / NR, 1 / NR, 2 / NR, 3 / NR, 4 / NR, 5 / NR, 6 / NR, 7 / NR);
}

/* count (1, 2, 4 or 8) consecutive 32-bit values into the low lanes; never reads past them. */
TFQ_INLINE __m256i tfq_x86_load32(const void *p, const int count) {
  if (count == 8) return _mm256_loadu_si256((const __m256i *)p);
  if (count == 4) return _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p));
  if (count == 2) {
    int64_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_castsi128_si256(_mm_cvtsi64_si128(v));
  }
  int32_t v;
  memcpy(&v, p, sizeof v);
  return _mm256_castsi128_si256(_mm_cvtsi32_si128(v));
}

/* count (1, 2, 4 or 8) consecutive bytes or halves, zero extended into a 128-bit register. */
TFQ_INLINE __m128i tfq_x86_load_small(const void *p, const int count, const int elem) {
  int bytes = count * elem;
  if (bytes == 16) return _mm_loadu_si128((const __m128i *)p);
  if (bytes == 8) return _mm_loadl_epi64((const __m128i *)p);
  if (bytes == 4) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm_cvtsi32_si128(v);
  }
  if (bytes == 2) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return _mm_cvtsi32_si128(v);
  }
  return _mm_cvtsi32_si128(*(const uint8_t *)p);
}

TFQ_INLINE __m256 tfq_x86_scales(const tfq_packed_weights *w, size_t index, const int NR) {
  __m256 v;
  if (w->scale_is_f16)
    v = _mm256_cvtph_ps(tfq_x86_load_small((const uint16_t *)w->scales + index, NR, 2));
  else
    v = _mm256_castsi256_ps(tfq_x86_load32((const float *)w->scales + index, NR));
  return _mm256_permutevar8x32_ps(v, tfq_x86_spread(NR, 1));
}

/* Rows m0..m0+MR-1 times output channels n0..n0+NR-1. */
TFQ_INLINE void tfq_x86_tile(const tfq_q8_job *job, int32_t m0, int32_t n0, const int MR,
                             const int NR, const int BITS, const int SYM) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = job->kp, groups = job->groups, span = job->span;
  const uint8_t *wrow[8];
  const int8_t *arow[4];
  for (int j = 0; j < NR; j++) wrow[j] = w->data + (size_t)(n0 + j) * job->row_bytes;
  for (int r = 0; r < MR; r++) arow[r] = job->qa + (size_t)(m0 + r) * (size_t)kp;

  __m256 total = _mm256_setzero_ps();
  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span;
    int32_t k1 = g == groups - 1 ? kp : k0 + span;
    __m256i acc[8];
    for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_si256();
    /* Unsigned byte offsets: no sign fix-up of k / 2 in the address arithmetic. */
    size_t wb = (size_t)k0 * BITS / 8, ab = (size_t)k0;
    int32_t c = (k1 - k0) / 32;
#ifdef TFQ_X86_DOT2
    for (; c >= 2; c -= 2, wb += 8 * BITS, ab += 64) {
      for (int j = 0; j < NR; j++) {
        __m256i u0 = tfq_x86_unpack(wrow[j] + wb, BITS, SYM);
        __m256i u1 = tfq_x86_unpack(wrow[j] + wb + 4 * BITS, BITS, SYM);
        for (int r = 0; r < MR; r++)
          TFQ_X86_DOT2(acc[r * NR + j], u0, _mm256_loadu_si256((const __m256i *)(arow[r] + ab)),
                       u1, _mm256_loadu_si256((const __m256i *)(arow[r] + ab + 32)));
      }
    }
#endif
    for (; c > 0; c--, wb += 4 * BITS, ab += 32) {
      for (int j = 0; j < NR; j++) {
        __m256i u = tfq_x86_unpack(wrow[j] + wb, BITS, SYM);
        for (int r = 0; r < MR; r++)
          TFQ_X86_DOT(acc[r * NR + j], u, _mm256_loadu_si256((const __m256i *)(arow[r] + ab)));
      }
    }
    size_t at = (size_t)g * (size_t)w->n + (size_t)n0;
    __m256i offset;
    if (SYM)
      offset = _mm256_set1_epi32(BITS == 4 ? 8 : 2);
    else
      offset = _mm256_permutevar8x32_epi32(
          _mm256_cvtepu8_epi32(tfq_x86_load_small(w->zero_points + at, NR, 1)),
          tfq_x86_spread(NR, 1));
    __m256i asum = _mm256_permutevar8x32_epi32(
        tfq_x86_load32(job->asum + (size_t)g * (size_t)job->m4 + (size_t)m0, MR),
        tfq_x86_spread(NR, 0));
    __m256i dot = tfq_x86_hsum(acc, MR * NR);
    __m256i accg = _mm256_sub_epi32(dot, _mm256_mullo_epi32(offset, asum));
    __m256 term = _mm256_mul_ps(tfq_x86_scales(w, at, NR), _mm256_cvtepi32_ps(accg));
    total = _mm256_add_ps(total, term);
  }

  float sum[8];
  _mm256_storeu_ps(sum, total);
  for (int r = 0; r < MR; r++) {
    float *y = job->y + (size_t)(m0 + r) * job->y_stride + (size_t)n0;
    for (int j = 0; j < NR; j++) {
      float out = job->sa[m0 + r] * sum[r * NR + j];
      if (w->bias) out = out + w->bias[n0 + j];
      y[j] = out;
    }
  }
}

TFQ_INLINE void tfq_x86_cols(const tfq_q8_job *job, int32_t m0, int32_t n_lo, int32_t n_hi,
                             const int MR, const int NR, const int BITS, const int SYM) {
  int32_t n0 = n_lo;
  for (; n0 + NR <= n_hi; n0 += NR) tfq_x86_tile(job, m0, n0, MR, NR, BITS, SYM);
  for (; n0 < n_hi; n0++) tfq_x86_tile(job, m0, n0, MR, 1, BITS, SYM);
}

/* Row tiles: 4 x 2 while 4 rows remain, then 2 x 4, then 1 x 8: always 8 accumulators, and
 * for the memory-bound M = 1 case 8 weight rows stream side by side.  Measured on Zen 4 at
 * K = N = 4096 against 4 x 2 / 2 x 2 / 1 x 4 and 4 x 1 / 2 x 2 / 1 x 2: equal at M = 16,
 * 10-25 % faster at M = 1, although GCC keeps some of the 1 x 8 accumulators on the stack. */
TFQ_INLINE void tfq_x86_run(const tfq_q8_job *job, const int BITS, const int SYM) {
  int32_t block = (int32_t)(TFQ_X86_BLOCK_BYTES / job->row_bytes) / 8 * 8;
  if (block < 8) block = 8;
  for (int32_t nb = job->n_begin; nb < job->n_end; nb += block) {
    int32_t ne = job->n_end - nb > block ? nb + block : job->n_end;
    int32_t m0 = 0;
    while (m0 < job->m) {
      int32_t rem = job->m - m0;
      if (rem >= 4) {
        tfq_x86_cols(job, m0, nb, ne, 4, 2, BITS, SYM);
        m0 += 4;
      } else if (rem >= 2) {
        tfq_x86_cols(job, m0, nb, ne, 2, 4, BITS, SYM);
        m0 += 2;
      } else {
        tfq_x86_cols(job, m0, nb, ne, 1, 8, BITS, SYM);
        m0 += 1;
      }
    }
  }
}

#endif /* TFQ_MATMUL_X86_TILE_H */
