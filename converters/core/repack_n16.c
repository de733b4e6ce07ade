/* Column-interleaved copy of packed weights for the AVX-512 column kernel
 * (matmul_avx512_n16.c): 16 output channels side by side, so that one vpdpbusd computes 16
 * channels at once and a group's int32 sums end up one per lane (no horizontal reduction
 * per group, which is what made sub-channel groups cost ~1.7x per-channel in the K-lane
 * kernels of matmul_x86_tile.h).  Made once per layer at run time (the op caches it); the
 * file format does not change.  Portable C: the layout is defined here, the kernel reads it.
 *
 * Layout: blocks of 16 channels (n0 = 16 b; channels >= N are zero), each block the groups
 * in order, in chunks of up to TFQ_N16_CHUNK (4) groups, each chunk
 *   - per group, 16 scales as stored (f16 or f32) and 16 offsets as bytes (the zero point, or
 *     8 / 2 for symmetric weights whose fields were flipped to offset binary); then zeros up to
 *     a multiple of 64 bytes (none for 4 groups: 4 x 48 or 4 x 80 bytes);
 *   - then the groups' k ranges [k0, k1) (k1 = kp for the last group) in 64-byte vectors: byte
 *     4l + t of a vector holds, for channel n0 + l, the unsigned fields (value + offset) of
 *     k = kv + 4s + t, s = 0..P-1, in bits [bits*s, bits*s + bits): P = 2 quads per vector for
 *     int4, 4 for int2.
 * Why chunks: metadata right after each group left most weight vectors straddling two cache
 * lines (split loads cost about a quarter of the kernel at one row), and metadata gathered at
 * the block's end was a second stream that stalled the kernel where weights come from DRAM.
 * Fields at k >= K are 0; the activations there are 0 too, so they add nothing. */
#include "internal.h"

static int32_t tfq_n16_span(const tfq_packed_weights *w) {
  int32_t kp = tfq_k_pad(w->k);
  return w->group_size < kp ? w->group_size : kp;
}

size_t tfq_n16_block_bytes(const tfq_packed_weights *w) {
  int32_t groups = tfq_num_groups(w->k, w->group_size);
  size_t bytes = (size_t)tfq_k_pad(w->k) * 2u * (size_t)w->bits;  /* kp x 16 x bits / 8 */
  for (int32_t g = 0; g < groups; g += TFQ_N16_CHUNK) bytes += tfq_n16_chunk_meta_bytes(w, groups, g);
  return bytes;
}

size_t tfq_n16_bytes(const tfq_packed_weights *w) {
  if ((w->bits != 4 && w->bits != 2) || w->k < 1 || w->k > TFQ_MAX_K || w->n < 1 ||
      w->n > TFQ_MAX_N || w->group_size < 1 || !tfq_simd_supports(w) ||
      (tfq_num_groups(w->k, w->group_size) > 1 && tfq_n16_span(w) % 16 != 0))
    return 0;
  size_t blocks = ((size_t)w->n + 15u) / 16u;
  return blocks * tfq_n16_block_bytes(w);  /* K, N bounded: no overflow */
}

static uint32_t tfq_field(const tfq_packed_weights *w, size_t row_bytes, int32_t n, int32_t k) {
  const uint8_t *row = w->data + (size_t)n * row_bytes;
  if (w->bits == 4) return (row[k / 2] >> (4 * (k % 2))) & 0xFu;
  return (row[k / 4] >> (2 * (k % 4))) & 0x3u;
}

void tfq_n16_repack(const tfq_packed_weights *w, uint8_t *out) {
  const int32_t kp = tfq_k_pad(w->k), span = tfq_n16_span(w);
  const int32_t groups = tfq_num_groups(w->k, w->group_size);
  const int32_t per = w->bits == 4 ? 8 : 16, quads = per / 4;
  const uint32_t flip = w->symmetric ? 1u << (w->bits - 1) : 0u;
  /* flip in every field of a 32-bit word, and one field's mask */
  const uint32_t flips = flip * (w->bits == 4 ? 0x11111111u : 0x55555555u);
  const uint32_t field_mask = (1u << w->bits) - 1u;
  const size_t row_bytes = tfq_row_bytes(w->k, w->bits), ssz = w->scale_is_f16 ? 2 : 4;
  const size_t block_bytes = tfq_n16_block_bytes(w), meta_bytes = tfq_n16_meta_bytes(w);
  for (int32_t n0 = 0; n0 < w->n; n0 += 16) {
    uint8_t *p = out + (size_t)(n0 / 16) * block_bytes, *meta = p;
    memset(p, 0, block_bytes);
    for (int32_t g = 0; g < groups; g++) {
      int32_t k0 = g * span, k1 = g == groups - 1 ? kp : k0 + span;
      if (g % TFQ_N16_CHUNK == 0) meta = p, p += tfq_n16_chunk_meta_bytes(w, groups, g);
      for (int32_t kv = k0; kv < k1; kv += per, p += 64) {
        for (int32_t l = 0; l < 16 && n0 + l < w->n; l++) {
          if (kv + per <= w->k) {
            /* All `per` fields below K: the channel's 4 row bytes at kv, transposed as a word
             * (field f = 4 s + t from bit bits * f to byte t, bit bits * s; the loop below is
             * the definition).  At load this was 90 MB/s of int2 field by field. */
            const uint8_t *src = w->data + (size_t)(n0 + l) * row_bytes + (size_t)kv * (size_t)w->bits / 8u;
            uint32_t v = ((uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 |
                          (uint32_t)src[3] << 24) ^ flips, o = 0;
            for (int32_t s = 0; s < quads; s++)
              for (int32_t t = 0; t < 4; t++)
                o |= ((v >> (w->bits * (4 * s + t))) & field_mask) << (8 * t + w->bits * s);
            for (int32_t t = 0; t < 4; t++) p[4 * l + t] = (uint8_t)(o >> (8 * t));
            continue;
          }
          for (int32_t s = 0; s < quads; s++)
            for (int32_t t = 0; t < 4; t++) {
              int32_t k = kv + 4 * s + t;
              if (k >= w->k) continue;
              uint32_t u = tfq_field(w, row_bytes, n0 + l, k) ^ flip;
              p[4 * l + t] = (uint8_t)(p[4 * l + t] | (u << (w->bits * s)));
            }
        }
      }
      for (int32_t l = 0; l < 16 && n0 + l < w->n; l++) {
        size_t i = (size_t)g * (size_t)w->n + (size_t)(n0 + l);
        memcpy(meta + (size_t)l * ssz, (const uint8_t *)w->scales + i * ssz, ssz);
        meta[16 * ssz + (size_t)l] = (uint8_t)(w->symmetric ? flip : w->zero_points[i]);
      }
      meta += meta_bytes;
    }
  }
}

/* The asum of natural-order activations: SUM of each row's int8 values over each group. */
static int32_t tfq_sum_bytes(const int8_t *p, int32_t count) {
  int32_t s = 0;
  for (int32_t k = 0; k < count; k++) s += p[k];
  return s;
}

void tfq_n16_asum(const int8_t *qa, int32_t m, int32_t kp, int32_t span, int32_t groups,
                  int32_t *asum, int32_t m4) {
  tfq_n16_asum_loop(qa, m, kp, span, groups, asum, m4, tfq_sum_bytes);
}
