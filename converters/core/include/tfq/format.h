/*
 * TFQ packed weight format, version 1.  This comment is the one description of the layout;
 * tfq_asr/convert/packing.py implements the same layout in NumPy and points here.
 *
 * A fully connected layer has K inputs and N outputs.  Integer weights q[k][n] have b bits,
 * b in {4, 2}:
 *   symmetric   signed, stored as b-bit two's complement; the quantizer produces -7..7
 *               (int4) or -1..1 (int2, ternary), zero point 0.  The kernels compute any
 *               b-bit value exactly, including -8 and -2.
 *   asymmetric  unsigned 0..2^b-1 with an integer zero point zp[g][n] in 0..2^b-1.
 * Scales s_w[g][n] belong to groups of G consecutive inputs k of one output channel n;
 * groups = ceil(K / G), the last group may be shorter (ragged).  Per-channel is G >= K.
 *
 * Buffers (in a file, the sections of one constant tensor per layer, the blob of litert_op.h):
 *   data         uint8 [N][row_bytes]: the weights transposed, one row per output channel n.
 *                row_bytes = K_pad * b / 8 with K_pad = K rounded up to a multiple of 32,
 *                so an int4 row is a multiple of 16 bytes and an int2 row of 8 bytes: one
 *                SIMD chunk of 32 weights is then one aligned 16-byte (int4) or 8-byte
 *                (int2) load and never straddles a row.  32 rather than 64 keeps the padding
 *                of common ASR widths small (K = 144 pads to 160, not 192).
 *                Element k of a row:
 *                  int4  byte k/2, low nibble (bits 0..3) for even k, high nibble for odd k
 *                        (TFLite INT4 order);
 *                  int2  byte k/4, bits 2*(k%4) .. 2*(k%4)+1 (element 4i in the lowest bits).
 *                Padding elements K..K_pad-1 are stored as zero bits.  No kernel lets them
 *                contribute: the reference loops stop at K and the SIMD kernels multiply them
 *                by activations that their workspace holds as zero, so the rule holds for
 *                asymmetric weights too, whatever the zero point.
 *   scales       [groups][N], s_w[g][n] at index g*N + n, float32 or IEEE binary16
 *                (scale_is_f16), host byte order (little-endian on every target).  Group-major
 *                because the kernels finish one group for several output channels at a time:
 *                the scales they need are then one contiguous vector load.
 *   zero_points  uint8 [groups][N], same indexing, asymmetric only; one byte per group keeps
 *                the per-group load trivial at a cost of 8/G bits per weight.
 *   bias         float32 [N], optional.
 * Alignment: the converter places every buffer at a 64-byte aligned address (LiteRT requires
 * it for constant inputs); the kernels themselves accept any alignment.
 *
 * Bits per weight: b * K_pad / K  +  (32 or 16) * groups / K  +  (asymmetric ? 8 * groups / K : 0),
 * about b + 16/G + 8/G with f16 scales when G divides K and K is a multiple of 32.
 *   e.g. int4 symmetric, f16 scales, G = 128, K = 1024: 4 + 0.125 = 4.125;
 *        int2 asymmetric, f16 scales, G = 32,  K = 144:  2 * 160/144 + 16 * 5/144 + 8 * 5/144
 *        = 3.06 (padding and the ragged fifth group cost 0.33 bits here).
 *
 * Files store rows dense (format version 2).  The padding above is what the kernels read; a
 * file need not carry it.  A header with version TFQ_FORMAT_VERSION_DENSE says its data tensor
 * is [N][tfq_row_bytes_dense(K, b)] = ceil(K * b / 8) bytes per row, same element order, the
 * bits past K in a row's last byte zero; the LiteRT ops expand it to the padded rows above once
 * (tfq_expand_rows, a copy cached per tensor) and run the kernels on that.  K = 144 int4 rows
 * then take 72 bytes in the file instead of 80.  Version 1 (padded rows in the file) still runs.
 *
 * Header: the per-layer parameters travel as TFQ_HEADER_COUNT int32 values (words 2..9 of the
 * blob in a file), in this order, written by packing.py (PackedWeights.header) and read by
 * tfq_weights_from_header():
 *   [TFQ_HEADER_MAGIC, TFQ_FORMAT_VERSION, bits, symmetric, K, N, G, scale_is_f16]
 */
#ifndef TFQ_FORMAT_H
#define TFQ_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define TFQ_FORMAT_VERSION 1        /* padded rows: what the kernels take */
#define TFQ_FORMAT_VERSION_DENSE 2  /* dense rows in the file, expanded by the ops */
#define TFQ_HEADER_MAGIC 0x31514654 /* "TFQ1" read as a little-endian int32 */
#define TFQ_HEADER_COUNT 8
#define TFQ_K_ALIGN 32     /* K is padded to a multiple of this many elements */
#define TFQ_BUFFER_ALIGN 64

/* K <= 2^16 keeps every int32 sum exact for any int8 activation and any zero-point byte:
 * |a * (q - zp)| <= 128 * 255, times 2^16 terms < 2^31.  So a zero point outside 0..2^b-1
 * (which tfq_weights_check reports) can give a wrong number but never an overflow. */
#define TFQ_MAX_K (1 << 16)
#define TFQ_MAX_N (1 << 24)
#define TFQ_MAX_M (1 << 24)

static inline int32_t tfq_k_pad(int32_t k) {
  return (k + TFQ_K_ALIGN - 1) / TFQ_K_ALIGN * TFQ_K_ALIGN;
}

/* Bytes of a dense (version 2) row: ceil(K * bits / 8). */
static inline size_t tfq_row_bytes_dense(int32_t k, int32_t bits) {
  return ((size_t)k * (size_t)bits + 7) / 8;
}

static inline size_t tfq_row_bytes(int32_t k, int32_t bits) {
  return (size_t)tfq_k_pad(k) * (size_t)bits / 8;
}

/* Written without k + G - 1 so that any positive int32 G is safe. */
static inline int32_t tfq_num_groups(int32_t k, int32_t group_size) {
  return k / group_size + (k % group_size != 0);
}

#endif /* TFQ_FORMAT_H */
