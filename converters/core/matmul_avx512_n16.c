/* AVX-512 VNNI column kernel over the column-interleaved weights of repack_n16.c (compiled
 * with -mavx512f -mavx512vnni).  Lanes are output channels: each vpdpbusd multiplies 4
 * activations of one row (broadcast) by 4 weights of 16 channels, so a group's exact int32
 * sums land one per lane and the float epilogue runs for 16 channels at once, in the order of
 * the numerics contract (term = s_w * (float)ACC_g, total = total + term, then s_a, then
 * bias): bit-identical to the reference.  Up to 8 rows share each unpacked weight vector.
 * Activations are in natural order (tfq_prepare_q8_natural) with per-group sums in asum. */
#include <immintrin.h>

#include "internal.h"

#define TFQ_INLINE static inline __attribute__((always_inline))
/* Each step asks for its weights this many bytes ahead (prefetches never fault).  Where a
 * model's weights stream from DRAM (Conformer L: 33-56 MB next to a 32 MiB L3) the hardware
 * prefetcher alone left the kernel waiting at the start of every layer: 8-12% faster at M = 4
 * on a 64 MB stack of layers, 7-14% on the Conformer L streaming step; no change in cache. */
#ifndef TFQ_N16_PREFETCH
#define TFQ_N16_PREFETCH 2048
#endif
/* ... times this at one row, whose steps take about a quarter of the time of four rows':
 * from DRAM (a 67 MB stack) 1.17-1.31x faster at one row than 2048 there; in cache 0.94-1.14x. */
#ifndef TFQ_N16_PREFETCH_ONE_ROW
#define TFQ_N16_PREFETCH_ONE_ROW 4
#endif

/* vpdpbusd (in tiles of one or two accumulators per step) and the weight loads through inline
 * asm.  GCC 12 copied every accumulator of _mm512_dpbusd_epi32 through a spare register each
 * step (8 vmovdqa on the loop-carried chain at one row) and folded each weight load into both
 * of its masks (four 64-byte loads for two vectors); together they held one row to about 40%
 * of the vpdpbusd rate.  Larger tiles keep the intrinsic: the asm there measured 0.91-0.99x
 * at 64 rows (512x512, 2048x512). */
TFQ_INLINE __m512i tfq_dpbusd(__m512i acc, __m512i u, __m512i x) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(x));
  return acc;
}

TFQ_INLINE __m512i tfq_load512(const uint8_t *p) {
  __m512i v;
  __asm__("vmovdqu64 %1, %0" : "=v"(v) : "m"(*(const uint8_t(*)[64])p));
  return v;
}

TFQ_INLINE __m512i tfq_bcast4(const int8_t *a) {
  int32_t v;
  memcpy(&v, a, sizeof v);
  return _mm512_set1_epi32(v);
}

/* A group's 16 scales (as float) and zero-point offsets, at meta (tfq_n16_enter_group). */
TFQ_INLINE void tfq_n16_group_meta(const tfq_packed_weights *w, const uint8_t *meta,
                                   __m512 *scale, __m512i *off) {
  const size_t ssz = w->scale_is_f16 ? 2 : 4;
  *scale = ssz == 2 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)meta))
                    : _mm512_loadu_ps((const void *)meta);
  *off = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(meta + 16 * ssz)));
}

/* The four 2- or 4-bit planes of one step of weights (two vectors of int4 or one of int2)
 * shifted down to the low bits of each byte: plane c holds, in byte t of lane l, the field of
 * input 4 c + t of channel l. */
TFQ_INLINE void tfq_n16_unpack(const uint8_t *p, __m512i u[4], const int BITS) {
  const __m512i lo = _mm512_set1_epi8(BITS == 4 ? 0x0F : 0x03);
  if (BITS == 4) {
    __m512i v0 = tfq_load512(p), v1 = tfq_load512(p + 64);
    u[0] = _mm512_and_si512(v0, lo), u[1] = _mm512_and_si512(_mm512_srli_epi32(v0, 4), lo);
    u[2] = _mm512_and_si512(v1, lo), u[3] = _mm512_and_si512(_mm512_srli_epi32(v1, 4), lo);
  } else {
    __m512i v = tfq_load512(p);
    u[0] = _mm512_and_si512(v, lo), u[1] = _mm512_and_si512(_mm512_srli_epi32(v, 2), lo);
    u[2] = _mm512_and_si512(_mm512_srli_epi32(v, 4), lo);
    u[3] = _mm512_and_si512(_mm512_srli_epi32(v, 6), lo);
  }
}

/* One tile: MR rows by NB adjacent column blocks of 16 (NB = 2 shares each activation
 * broadcast between two blocks: at few rows the broadcasts, not the vpdpbusd, filled the
 * vector pipes).  Each block's lanes get the same operations in the same order for any NB. */
TFQ_INLINE void tfq_n16_tile(const tfq_q8_job *job, const uint8_t *block, size_t block_bytes,
                             int32_t n0, const __mmask16 *mask, int32_t m0, const int MR,
                             const int BITS, const int NB) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = job->kp, groups = job->groups, span = job->span;
  const __m512i lo = _mm512_set1_epi8(BITS == 4 ? 0x0F : 0x03);
  /* NACC independent accumulators per row and block keep enough vpdpbusd chains in flight
   * when there are few (its latency is several cycles); summed exactly at the group end. */
  const int NACC = MR * NB >= 8 ? 1 : MR * NB >= 4 ? 2 : 4;
  /* Where the planes that share an accumulator share a bit position (int4 with NACC >= 2: low
   * nibbles in even accumulators, high in odd; int2 with NACC = 4: one plane each), the fields
   * are masked in place instead of shifted down: 16x the high nibble, 4^c x 2-bit plane c.
   * Each accumulator is then that exact multiple of its sum, shifted back at the group end.
   * This saves the shifts that bound the kernel at one to four rows.  |acc| stays below 2^31:
   * 240 * 127 * K / 2 < 2^30 for K <= TFQ_MAX_K = 2^16 (int4), 192 * 127 * K / 4 (int2). */
  const int INPLACE = BITS == 4 ? NACC >= 2 : NACC == 4;
  __m512 total[8][2];
  for (int r = 0; r < MR; r++)
    for (int b = 0; b < NB; b++) total[r][b] = _mm512_setzero_ps();
  const uint8_t *const start[2] = {block, block + block_bytes};
  const uint8_t *p[2] = {start[0], start[1]}, *chunk[2] = {NULL, NULL};
  for (int32_t g = 0; g < groups; g++) {
    int32_t k0 = g * span, k1 = g == groups - 1 ? kp : k0 + span;
    const uint8_t *meta[2];
    for (int b = 0; b < NB; b++) meta[b] = tfq_n16_enter_group(w, groups, g, &p[b], &chunk[b]);
    const int8_t *a[8];
    __m512i acc[8][2][4];
    for (int r = 0; r < MR; r++) {
      a[r] = job->qa + (size_t)(m0 + r) * (size_t)kp + (size_t)k0;
      for (int b = 0; b < NB; b++)
        for (int c = 0; c < NACC; c++) acc[r][b][c] = _mm512_setzero_si512();
    }
    /* 16 k per step: two vectors of int4 or one of int2 per block, four vpdpbusd per row and
     * block.  Steps wholly past K (the padding to TFQ_K_ALIGN: weights and activations zero)
     * are skipped. */
    const int32_t step_bytes = BITS == 4 ? 128 : 64;
    int32_t kstop = g == groups - 1 ? (w->k + 15) / 16 * 16 : k1;
    for (int32_t kv = k0; kv < kstop; kv += 16) {
      __m512i u[2][4];
      for (int b = 0; b < NB; b++) {
        const uint8_t *q = p[b];
#if TFQ_N16_PREFETCH
        /* TFQ_N16_PREFETCH ahead in the block; past its end, with two blocks at a time, the
         * next pair's block at that place (the partner block, just past, is being read). */
        const char *ahead = (const char *)q + TFQ_N16_PREFETCH * (MR == 1 ? TFQ_N16_PREFETCH_ONE_ROW : 1);
        if (NB == 2 && (size_t)(ahead - (const char *)start[b]) >= block_bytes) ahead += block_bytes;
        _mm_prefetch(ahead, _MM_HINT_T0);
        if (BITS == 4) _mm_prefetch(ahead + 64, _MM_HINT_T0);
#endif
        if (BITS == 4 && INPLACE) {
          const __m512i hi = _mm512_set1_epi8((char)0xF0);
          __m512i v0 = tfq_load512(q), v1 = tfq_load512(q + 64);
          u[b][0] = _mm512_and_si512(v0, lo), u[b][1] = _mm512_and_si512(v0, hi);
          u[b][2] = _mm512_and_si512(v1, lo), u[b][3] = _mm512_and_si512(v1, hi);
        } else if (BITS == 2 && INPLACE) {
          __m512i v = tfq_load512(q);
          u[b][0] = _mm512_and_si512(v, lo), u[b][1] = _mm512_and_si512(v, _mm512_set1_epi8(0x0C));
          u[b][2] = _mm512_and_si512(v, _mm512_set1_epi8(0x30));
          u[b][3] = _mm512_and_si512(v, _mm512_set1_epi8((char)0xC0));
        } else {
          tfq_n16_unpack(q, u[b], BITS);
        }
        p[b] += step_bytes;
      }
      for (int r = 0; r < MR; r++) {
        for (int c = 0; c < 4; c++) {
          __m512i x = tfq_bcast4(a[r] + 4 * c);
          for (int b = 0; b < NB; b++)
            acc[r][b][c % NACC] = MR * NB <= 2 ? tfq_dpbusd(acc[r][b][c % NACC], u[b][c], x)
                                               : _mm512_dpbusd_epi32(acc[r][b][c % NACC], u[b][c], x);
        }
        a[r] += 16;
      }
    }
    const int32_t *asum = job->asum + (size_t)g * (size_t)job->m4 + (size_t)m0;
    for (int b = 0; b < NB; b++) {
      p[b] += (size_t)((k1 - kstop) / 16) * (size_t)step_bytes;
      __m512 s;
      __m512i off;
      tfq_n16_group_meta(w, meta[b], &s, &off);
      for (int r = 0; r < MR; r++) {
        __m512i sum = acc[r][b][0];
        if (INPLACE && BITS == 4 && NACC == 4) {
          /* the two 16x accumulators added before their one shift: together they hold the
           * high nibbles' half of the group, within the bound above */
          sum = _mm512_add_epi32(_mm512_add_epi32(sum, acc[r][b][2]),
                                 _mm512_srai_epi32(_mm512_add_epi32(acc[r][b][1], acc[r][b][3]), 4));
        } else {
          for (int c = 1; c < NACC; c++) {
            /* in place: accumulator c holds 2^(BITS * (c % (8 / BITS))) times its sum */
            const int shift = INPLACE ? BITS * (c % (8 / BITS)) : 0;
            sum = _mm512_add_epi32(sum, shift ? _mm512_srai_epi32(acc[r][b][c], shift) : acc[r][b][c]);
          }
        }
        /* sum - off * asum: at groups of up to 128 one vpdpwssd (|asum| <= 128 * 128 fits
         * int16; the high halves of off are zero), else a 32-bit multiply */
        __m512i accg = span <= 128
            ? _mm512_dpwssd_epi32(sum, off, _mm512_set1_epi32(-asum[r]))
            : _mm512_sub_epi32(sum, _mm512_mullo_epi32(off, _mm512_set1_epi32(asum[r])));
        total[r][b] = _mm512_add_ps(total[r][b], _mm512_mul_ps(s, _mm512_cvtepi32_ps(accg)));
      }
    }
  }
  for (int b = 0; b < NB; b++) {
    int32_t nb = n0 + 16 * b;
    __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mask[b], w->bias + nb) : _mm512_setzero_ps();
    for (int r = 0; r < MR; r++) {
      __m512 out = _mm512_mul_ps(_mm512_set1_ps(job->sa[m0 + r]), total[r][b]);
      if (w->bias) out = _mm512_add_ps(out, bias);
      _mm512_mask_storeu_ps(job->y + (size_t)(m0 + r) * job->y_stride + (size_t)nb, mask[b], out);
    }
  }
}

/* The block's mask of the columns in [n_begin, n_end). */
TFQ_INLINE __mmask16 tfq_n16_mask(const tfq_q8_job *job, int32_t n0) {
  int32_t lo = job->n_begin > n0 ? job->n_begin - n0 : 0;
  int32_t hi = job->n_end - n0 < 16 ? job->n_end - n0 : 16;
  return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* Every row of NB column blocks from n0: tiles of 8 rows (one block only: two blocks of 8
 * rows spill registers), then 4, 2, 1. */
TFQ_INLINE void tfq_n16_rows(const tfq_q8_job *job, const uint8_t *block, size_t block_bytes,
                             int32_t n0, const __mmask16 *mask, const int BITS, const int NB) {
  int32_t m0 = 0;
  for (; NB == 1 && job->m - m0 >= 8; m0 += 8)
    tfq_n16_tile(job, block, block_bytes, n0, mask, m0, 8, BITS, NB);
  if (job->m - m0 >= 4) tfq_n16_tile(job, block, block_bytes, n0, mask, m0, 4, BITS, NB), m0 += 4;
  if (job->m - m0 >= 2) tfq_n16_tile(job, block, block_bytes, n0, mask, m0, 2, BITS, NB), m0 += 2;
  if (job->m - m0 >= 1) tfq_n16_tile(job, block, block_bytes, n0, mask, m0, 1, BITS, NB);
}

TFQ_INLINE void tfq_n16_run(const tfq_q8_job *job, const int BITS) {
  const size_t block_bytes = tfq_n16_block_bytes(job->w);
  const uint8_t *base = (const uint8_t *)job->w->repacked;
  for (int32_t b = job->n_begin / 16; b * 16 < job->n_end;) {
    int32_t n0 = b * 16;
    __mmask16 mask[2] = {tfq_n16_mask(job, n0), 0};
    const uint8_t *block = base + (size_t)b * block_bytes;
    /* int2 at up to 4 rows: two blocks at a time.  Not int4: on the Conformer L stack (its
     * weights from DRAM) two int4 streams ran 1.5x slower than one. */
    if (BITS == 2 && job->m <= 4 && (b + 1) * 16 < job->n_end) {
      mask[1] = tfq_n16_mask(job, n0 + 16);
      tfq_n16_rows(job, block, block_bytes, n0, mask, BITS, 2);
      b += 2;
    } else {
      tfq_n16_rows(job, block, block_bytes, n0, mask, BITS, 1);
      b++;
    }
  }
}

/* count (a multiple of 16) int8 values: SAD against zero of the bytes with the sign bit
 * flipped sums value + 128 per byte, exact in 64 bits. */
static int32_t tfq_sum_bytes_sad(const int8_t *p, int32_t count) {
  const __m128i flip = _mm_set1_epi8((char)0x80), zero = _mm_setzero_si128();
  __m128i acc = zero;
  for (int32_t k = 0; k < count; k += 16) {
    __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)(p + k)), flip);
    acc = _mm_add_epi64(acc, _mm_sad_epu8(v, zero));
  }
  return (int32_t)(_mm_cvtsi128_si64(acc) + _mm_extract_epi64(acc, 1)) - 128 * count;
}

void tfq_n16_asum_avx512(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                         int32_t *asum, int32_t m4) {
  tfq_n16_asum_loop(qa, m, kp, span, groups, asum, m4, tfq_sum_bytes_sad);
}

void tfq_matmul_n16_avx512(const tfq_q8_job *job) {
  if (job->w->bits == 4)
    tfq_n16_run(job, 4);
  else
    tfq_n16_run(job, 2);
}

/* Float-activation path over the same column-interleaved weights (weight-only layers, LSTM
 * kernels; mostly one row per call): each 16-lane byte plane k of a weight vector becomes the
 * float weights (u - offset) of 16 channels (shift, mask, subtract, convert, all exact) and one
 * FMA per row adds x[k] times them.  The old K-lane float path converted and reduced per
 * channel (7 GMAC/s at M = 1); this one has no horizontal work until the output.  Numerics as
 * kernels.h allows for this path: float sums in another order, FMAs. */

/* The float weights (q - offset) of 16 channels for input 4 c + t of one step, read straight
 * from its packed vectors v (two of int4: planes 0-1 in the low and high nibbles of the first,
 * 2-3 of the second; one of int2) by table lookup: vpermps reads only the low 4 bits of each
 * lane's dword, so one shift brings the field there and `table` maps those 4 bits to its value
 * (i for int4; i & 3 for int2, whose next field sits in bits 2-3), minus the offset where it is
 * the same for every lane (symmetric: 8 or 2), else minus `off`.  Exact small integers, the
 * values tfq_n16_unpack, masking and a conversion gave, in 2 or 3 instructions instead of 3
 * to 4: the float path at one row spent most of its time decoding. */
TFQ_INLINE __m512 tfq_n16_field_f32(const __m512i v[2], int c, int t, __m512 table, __m512 off,
                                    int sym, const int BITS) {
  const __m512i src = BITS == 4 ? v[c >> 1] : v[0];
  const int shift = 8 * t + (BITS == 4 ? 4 * (c & 1) : 2 * c);
  const __m512 f = _mm512_permutexvar_ps(shift ? _mm512_srli_epi32(src, shift) : src, table);
  return sym ? f : _mm512_sub_ps(f, off);
}

/* The lookup table of tfq_n16_field_f32: the field value of each 4-bit index, minus the
 * symmetric offset where there is one. */
TFQ_INLINE __m512 tfq_n16_field_table(int sym, const int BITS) {
  float t[16];
  for (int i = 0; i < 16; i++)
    t[i] = (float)((BITS == 4 ? i : i & 3) - (sym ? (BITS == 4 ? 8 : 2) : 0));
  return _mm512_loadu_ps(t);
}

TFQ_INLINE void tfq_n16_load_step(const uint8_t *p, __m512i v[2], const int BITS) {
  v[0] = _mm512_loadu_si512((const void *)p);
  v[1] = BITS == 4 ? _mm512_loadu_si512((const void *)(p + 64)) : v[0];
}

TFQ_INLINE void tfq_n16_f32_tile(const tfq_f32_job *job, const uint8_t *block, int32_t n0,
                                 __mmask16 mask, int32_t m0, const int MR, const int BITS) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = tfq_k_pad(w->k), k = w->k;
  const int32_t span = w->group_size < kp ? w->group_size : kp;
  const int NACC = MR >= 8 ? 1 : 2;  /* FMA chains in flight per row */
  const int sym = w->symmetric;
  const __m512 table = tfq_n16_field_table(sym, BITS);
  __m512 total[8];
  for (int r = 0; r < MR; r++) total[r] = _mm512_setzero_ps();
  const uint8_t *p = block, *chunk = block;
  for (int32_t g = 0; g < job->groups; g++) {
    int32_t k0 = g * span, k1 = g == job->groups - 1 ? kp : k0 + span;
    __m512 s;
    __m512i off;
    tfq_n16_group_meta(w, tfq_n16_enter_group(w, job->groups, g, &p, &chunk), &s, &off);
    const uint8_t *next = p + (size_t)(k1 - k0) / 16 * (BITS == 4 ? 128 : 64);
    const __m512 off_f = _mm512_cvtepi32_ps(off);
    __m512 acc[8][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int32_t kv = k0; kv < k1 && kv < k; kv += 16, p += BITS == 4 ? 128 : 64) {
      /* Vectors wholly past K (padding to 32) are skipped, and within the last one the lanes
       * past K: a K = 9 convolution would otherwise do 32 inputs' work.
       * x[kv .. kv+15] of each row, zero past K (the row holds only K floats). */
      const int live = k - kv < 16 ? k - kv : 16;
      float xb[8][16];
      __mmask16 xm = kv + 16 <= k ? (__mmask16)0xFFFF
                   : kv >= k ? (__mmask16)0 : (__mmask16)((1u << (k - kv)) - 1u);
      for (int r = 0; r < MR; r++)
        _mm512_storeu_ps(xb[r], _mm512_maskz_loadu_ps(xm, job->x + (size_t)(m0 + r) * job->x_stride + (size_t)kv));
      __m512i v[2];
      tfq_n16_load_step(p, v, BITS);
      for (int c = 0; c < 4; c++) {
        for (int t = 0; t < 4; t++) {
          if (4 * c + t >= live) continue;
          __m512 wf = tfq_n16_field_f32(v, c, t, table, off_f, sym, BITS);
          for (int r = 0; r < MR; r++)
            acc[r][t % NACC] = _mm512_fmadd_ps(wf, _mm512_set1_ps(xb[r][4 * c + t]), acc[r][t % NACC]);
        }
      }
    }
    p = next;
    for (int r = 0; r < MR; r++)
      total[r] = _mm512_fmadd_ps(s, NACC == 1 ? acc[r][0] : _mm512_add_ps(acc[r][0], acc[r][1]), total[r]);
  }
  __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mask, w->bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < MR; r++)
    _mm512_mask_storeu_ps(job->y + (size_t)(m0 + r) * job->y_stride + (size_t)n0, mask,
                          _mm512_add_ps(total[r], bias));
}

/* Many rows and a short K (the first subsampling convolution: K = 9, 300+ patch rows a step):
 * the tile above would decode the same weights again for every 8 rows.  Here one column
 * block's weights are decoded once, w_f[k] = (float)(q - offset) for k < K, with each group's
 * scales, and every row tile reads them from L1.  Each accumulator gets the same FMAs in the
 * same order as in tfq_n16_f32_tile, so the two agree bit for bit. */
#define TFQ_F32_DECODED_MAX_K 256  /* 16 KB of decoded weights on the stack */

typedef struct tfq_n16_decoded {
  float wf[TFQ_F32_DECODED_MAX_K][16];
  __m512 scale[TFQ_F32_DECODED_MAX_K / 32];  /* groups of at least 32 (or one group) */
} tfq_n16_decoded;

TFQ_INLINE int tfq_n16_f32_decodable(const tfq_f32_job *job) {
  const tfq_packed_weights *w = job->w;
  return job->m > 8 && tfq_k_pad(w->k) <= TFQ_F32_DECODED_MAX_K &&
         job->groups <= TFQ_F32_DECODED_MAX_K / 32;
}

TFQ_INLINE void tfq_n16_f32_decode(const tfq_f32_job *job, const uint8_t *block,
                                   tfq_n16_decoded *d, const int BITS) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = tfq_k_pad(w->k), k = w->k;
  const int32_t span = w->group_size < kp ? w->group_size : kp;
  const int sym = w->symmetric;
  const __m512 table = tfq_n16_field_table(sym, BITS);
  const uint8_t *p = block, *chunk = block;
  for (int32_t g = 0; g < job->groups; g++) {
    int32_t k0 = g * span, k1 = g == job->groups - 1 ? kp : k0 + span;
    __m512i off;
    tfq_n16_group_meta(w, tfq_n16_enter_group(w, job->groups, g, &p, &chunk), &d->scale[g], &off);
    const uint8_t *next = p + (size_t)(k1 - k0) / 16 * (BITS == 4 ? 128 : 64);
    const __m512 off_f = _mm512_cvtepi32_ps(off);
    for (int32_t kv = k0; kv < k1 && kv < k; kv += 16, p += BITS == 4 ? 128 : 64) {
      __m512i v[2];
      tfq_n16_load_step(p, v, BITS);
      for (int c = 0; c < 4; c++)
        for (int t = 0; t < 4; t++)
          _mm512_storeu_ps(d->wf[kv + 4 * c + t], tfq_n16_field_f32(v, c, t, table, off_f, sym, BITS));
    }
    p = next;
  }
}

TFQ_INLINE void tfq_n16_f32_decoded_tile(const tfq_f32_job *job, const tfq_n16_decoded *d,
                                         int32_t n0, __mmask16 mask, int32_t m0, const int MR) {
  const tfq_packed_weights *w = job->w;
  const int32_t kp = tfq_k_pad(w->k), k = w->k;
  const int32_t span = w->group_size < kp ? w->group_size : kp;
  const int NACC = MR >= 8 ? 1 : 2;  /* as in tfq_n16_f32_tile: the same sums */
  const float *x[8];
  for (int r = 0; r < MR; r++) x[r] = job->x + (size_t)(m0 + r) * job->x_stride;
  __m512 total[8];
  for (int r = 0; r < MR; r++) total[r] = _mm512_setzero_ps();
  for (int32_t g = 0; g < job->groups; g++) {
    int32_t k0 = g * span, k1 = g == job->groups - 1 ? kp : k0 + span;
    if (k1 > k) k1 = k;
    __m512 acc[8][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int32_t kk = k0; kk < k1; kk++) {
      __m512 wf = _mm512_loadu_ps(d->wf[kk]);
      for (int r = 0; r < MR; r++)
        acc[r][kk % NACC] = _mm512_fmadd_ps(wf, _mm512_set1_ps(x[r][kk]), acc[r][kk % NACC]);
    }
    for (int r = 0; r < MR; r++)
      total[r] = _mm512_fmadd_ps(d->scale[g], NACC == 1 ? acc[r][0] : _mm512_add_ps(acc[r][0], acc[r][1]), total[r]);
  }
  __m512 bias = w->bias ? _mm512_maskz_loadu_ps(mask, w->bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < MR; r++)
    _mm512_mask_storeu_ps(job->y + (size_t)(m0 + r) * job->y_stride + (size_t)n0, mask,
                          _mm512_add_ps(total[r], bias));
}

TFQ_INLINE void tfq_n16_f32_run(const tfq_f32_job *job, const int BITS) {
  const size_t block_bytes = tfq_n16_block_bytes(job->w);
  const uint8_t *base = (const uint8_t *)job->w->repacked;
  const int decoded = tfq_n16_f32_decodable(job);
  tfq_n16_decoded d;
  for (int32_t n0 = 0; n0 < job->w->n; n0 += 16) {
    int32_t hi = job->w->n - n0 < 16 ? job->w->n - n0 : 16;
    __mmask16 mask = (__mmask16)((1u << hi) - 1u);
    const uint8_t *block = base + (size_t)(n0 / 16) * block_bytes;
    int32_t m0 = 0;
    if (decoded) {
      tfq_n16_f32_decode(job, block, &d, BITS);
      for (; job->m - m0 >= 8; m0 += 8) tfq_n16_f32_decoded_tile(job, &d, n0, mask, m0, 8);
    }
    for (; job->m - m0 >= 8; m0 += 8) tfq_n16_f32_tile(job, block, n0, mask, m0, 8, BITS);
    if (job->m - m0 >= 4) tfq_n16_f32_tile(job, block, n0, mask, m0, 4, BITS), m0 += 4;
    if (job->m - m0 >= 2) tfq_n16_f32_tile(job, block, n0, mask, m0, 2, BITS), m0 += 2;
    if (job->m - m0 >= 1) tfq_n16_f32_tile(job, block, n0, mask, m0, 1, BITS);
  }
}

void tfq_linear_f32_n16_avx512(const tfq_f32_job *job) {
  if (job->w->bits == 4)
    tfq_n16_f32_run(job, 4);
  else
    tfq_n16_f32_run(job, 2);
}
