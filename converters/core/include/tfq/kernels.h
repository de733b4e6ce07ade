/*
 * TFQ kernels: fully connected layers with packed int4/int2 weights (layout in format.h).
 * Portable C11 with no TFLite dependency, so a LiteRT custom op, the Python binding, the
 * benchmark and the Android app all call these same entry points.
 *
 * Numerics contract, int8-activation path (tfq_linear_q8, tfq_matmul_q8):
 *   s_a[m]   = max_k |x[m][k]| / 127 in float32 (1.0 if the row is all zero)
 *   q_a[m][k] = clamp(round_half_even(x[m][k] / s_a[m]), -127, 127)
 *   ACC_g    = int32 sum over k in group g of q_a[m][k] * (q[k][n] - zp[g][n])
 *   y[m][n]  = s_a[m] * SUM_g (s_w[g][n] * (float)ACC_g) + bias[n]
 * where the float sum starts at 0, runs over g in increasing order in float32 (a multiply
 * then an add, never fused), then the multiply by s_a, then the add of bias (skipped when
 * bias is NULL).  Every ISA computes the integer accumulators exactly and the epilogue in
 * this order, so all ISAs return bit-identical results.
 *
 * Float-activation path (tfq_linear_f32): y = SUM_g s_w[g][n] * SUM_k x*(q-zp) + bias in
 * float arithmetic without activation quantization.  Different numerics from the int8 path
 * (no rounding of x), so it is never substituted for it automatically; results match a
 * float64 computation within float rounding, and SIMD versions may fuse multiply-adds.
 *
 * Sizes: every buffer comes with its length (in elements), strides are in elements, and each
 * call checks shapes, strides and lengths before touching memory; a bad call returns a
 * negative tfq_status and writes nothing.  Calls are thread safe; a caller may split N
 * across threads by calling with the same arguments on views of disjoint output columns
 * (see tfq_matmul_q8_cols).
 */
#ifndef TFQ_KERNELS_H
#define TFQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tfq/format.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TFQ_API __declspec(dllexport)
#else
#define TFQ_API __attribute__((visibility("default")))
#endif

/* For our own loops outside the hand-written kernels: an AVX2 clone of the function beside the
 * baseline one, picked at load time by cpuid (GCC's ifunc target clones, on x86-64 glibc Linux
 * only: not clang, not Android).  Only for code whose result does not depend on the vector
 * width (same IEEE operations per element, no FMA: -ffp-contract=off), so both clones give the
 * same bits. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__ANDROID__)
#define TFQ_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
/* The same for loops built on fmaf (exactly rounded everywhere): clones with FMA units (and
 * AVX-512), so that fmaf becomes one vector instruction there. */
#define TFQ_FMA_CLONE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TFQ_AVX2_CLONE
#define TFQ_FMA_CLONE
#endif

typedef enum tfq_status {
  TFQ_OK = 0,
  TFQ_ERR_NULL = -1,        /* a required pointer is NULL */
  TFQ_ERR_FORMAT = -2,      /* bits, symmetric, scale type or header not supported */
  TFQ_ERR_SHAPE = -3,       /* K, N, G or M out of range */
  TFQ_ERR_BUFFER = -4,      /* a buffer is shorter than the shape requires */
  TFQ_ERR_STRIDE = -5,      /* a row stride is smaller than the row */
  TFQ_ERR_WORKSPACE = -6,   /* workspace missing or shorter than tfq_workspace_bytes() */
  TFQ_ERR_ZERO_POINT = -7,  /* a zero point is outside 0..2^bits-1 (tfq_weights_check) */
  TFQ_ERR_ISA = -8          /* the requested instruction set is not available here */
} tfq_status;

typedef enum tfq_isa {
  TFQ_ISA_AUTO = 0,          /* best available for this CPU and shape, see tfq_select_isa */
  TFQ_ISA_REF = 1,           /* plain C loops: the reference, always available */
  TFQ_ISA_AVX2 = 2,          /* x86-64 AVX2 + FMA */
  TFQ_ISA_AVX512VNNI = 3,    /* x86-64 AVX-512 VL + VNNI, 256-bit vectors */
  TFQ_ISA_NEON = 4,          /* aarch64 Advanced SIMD */
  TFQ_ISA_NEON_DOTPROD = 5,  /* aarch64 Advanced SIMD + dot product (SDOT) */
  TFQ_ISA_COUNT = 6
} tfq_isa;

/* A view of one packed layer: no ownership, lengths in bytes or elements as named. */
typedef struct tfq_packed_weights {
  int32_t bits;          /* 4 or 2 */
  int32_t symmetric;     /* 1: two's complement, no zero points; 0: unsigned + zero points */
  int32_t k;             /* inputs */
  int32_t n;             /* outputs */
  int32_t group_size;    /* G >= 1; G >= K means per-channel */
  int32_t scale_is_f16;  /* 1: scales are IEEE binary16; 0: float32 */
  const uint8_t *data;   /* [n][tfq_row_bytes(k, bits)] */
  size_t data_bytes;
  const void *scales;    /* [n][groups] */
  size_t scales_bytes;
  const uint8_t *zero_points; /* [n][groups], asymmetric only (NULL when symmetric) */
  size_t zero_points_bytes;
  const float *bias;     /* [n] or NULL */
  size_t bias_count;
  /* Optional: the same weights column-interleaved by tfq_repack (NULL if none).  Where the
   * AVX-512 VNNI kernels run, a layer with it runs the column kernel (16 channels per vector,
   * no per-group horizontal sums), bit-identical to the others.  Zero-initialise this field. */
  const void *repacked;
  size_t repacked_bytes;
} tfq_packed_weights;

TFQ_API const char *tfq_status_str(int status);
TFQ_API const char *tfq_isa_name(tfq_isa isa);
TFQ_API int tfq_isa_available(tfq_isa isa);

/* Where code we did not compile (LiteRT, XNNPACK) may have left the upper halves of the vector
 * registers in use, clear them (vzeroupper on x86-64 CPUs with AVX; nothing elsewhere), so that
 * the SSE-encoded code after it does not run with false dependencies on them.  The streaming
 * core calls it after each model run: with the frontend still SSE-encoded, the state XNNPACK
 * left made a litert-int8 step of conformer-ctc-xs 15-20% slower on the Zen 4 VM
 * (BENCHMARKS.md, 2026-12-03); the frontend is AVX2-encoded now, but its scalar and decoding
 * code is not.  (On entry to our ops it measured no gain: their hot code is AVX-encoded.) */
TFQ_API void tfq_clean_vector_state(void);

/* The ISA that TFQ_ISA_AUTO runs for these weights and M (the dispatch rule is in dispatch.c).
 * The environment variable TFQ_KERNELS_ISA=ref|avx2|avx512vnni|neon|neon_dotprod, read once,
 * overrides the CPU choice when that ISA is available. */
TFQ_API tfq_isa tfq_select_isa(const tfq_packed_weights *w, int32_t m);

/* Fill bits, symmetric, k, n, group_size and scale_is_f16 from a header tensor (format.h);
 * the buffer pointers are left untouched.  Returns TFQ_ERR_FORMAT on a wrong magic/version. */
TFQ_API int tfq_weights_from_header(tfq_packed_weights *w, const int32_t *header, size_t count);

/* Check the fields and buffer lengths of w (also done by every compute call), and the zero
 * point values (not done per call: that scan would cost up to a tenth of an M = 1 matmul; an
 * out-of-range zero point still computes the formula exactly, see TFQ_MAX_K).  Call it once
 * when a layer is loaded. */
TFQ_API int tfq_weights_check(const tfq_packed_weights *w);

/* Bytes tfq_repack writes for w, or 0 when no kernel on this CPU would use the copy (no
 * AVX-512 VNNI, or a group size the SIMD kernels do not take).  Made once per layer (the
 * LiteRT op caches it per weights tensor); its size is about that of the packed data. */
TFQ_API size_t tfq_repacked_bytes(const tfq_packed_weights *w);
TFQ_API int tfq_repack(const tfq_packed_weights *w, void *out, size_t out_bytes);

/* Memory for repacked copies: bytes (64-byte aligned) cut from the chain of chunks *arenas
 * (on Linux: 2 MiB aligned, advised MADV_HUGEPAGE, so that weights streamed from DRAM do not
 * pay a TLB walk and a prefetcher restart every 4 KB; see arena.c), *in_arena = 1; or, where
 * there are no arenas (other systems, AddressSanitizer builds, mmap refused), from
 * aligned_alloc, *in_arena = 0, and the caller frees it.  NULL if memory is short.  Start with
 * *arenas = NULL; tfq_arena_free_all releases every chunk (and the copies in them). */
typedef struct tfq_arena tfq_arena;
TFQ_API void *tfq_arena_alloc(tfq_arena **arenas, size_t bytes, int *in_arena);
TFQ_API void tfq_arena_free_all(tfq_arena **arenas);

/* Bytes of scratch memory tfq_linear_q8 / tfq_matmul_q8 need for M rows (0 if w is invalid).
 * Allocate it once per layer and shape (64-byte aligned for speed, not for correctness). */
TFQ_API size_t tfq_workspace_bytes(const tfq_packed_weights *w, int32_t m);

/* Row-wise dynamic int8 quantization of activations (the contract above). */
TFQ_API int tfq_quantize_rows_q8(const float *x, size_t x_count, size_t x_stride, int32_t m,
                                 int32_t k, int8_t *qa, size_t qa_count, size_t qa_stride,
                                 float *sa, size_t sa_count);

/* y[m][n] from already quantized activations qa (natural order, stride >= K) and s_a. */
TFQ_API int tfq_matmul_q8(tfq_isa isa, const tfq_packed_weights *w, const int8_t *qa,
                          size_t qa_count, size_t qa_stride, const float *sa, size_t sa_count,
                          int32_t m, float *y, size_t y_count, size_t y_stride, void *workspace,
                          size_t workspace_bytes);

/* Same as tfq_matmul_q8 for output columns n_begin..n_end-1 only (y still indexed by n):
 * threads of one call share a workspace prepared by tfq_prepare_q8 first. */
TFQ_API int tfq_prepare_q8(tfq_isa isa, const tfq_packed_weights *w, const int8_t *qa,
                           size_t qa_count, size_t qa_stride, int32_t m, void *workspace,
                           size_t workspace_bytes);
TFQ_API int tfq_matmul_q8_cols(tfq_isa isa, const tfq_packed_weights *w, const float *sa,
                               size_t sa_count, int32_t m, int32_t n_begin, int32_t n_end,
                               float *y, size_t y_count, size_t y_stride,
                               const void *workspace, size_t workspace_bytes);

/* Quantize x (stride >= K) into the workspace and multiply: the op kernel's one call. */
TFQ_API int tfq_linear_q8(tfq_isa isa, const tfq_packed_weights *w, const float *x,
                          size_t x_count, size_t x_stride, int32_t m, float *y, size_t y_count,
                          size_t y_stride, void *workspace, size_t workspace_bytes);

/* tfq_linear_q8 with one activation scale for every row (a calibrated static range, scale =
 * max_abs / 127) instead of each row's max|x| / 127: x / scale rounded to nearest-even and
 * clamped to [-127, 127], as the numerics contract quantizes a row.  TFQ_ERR_FORMAT for a
 * scale that is not finite and positive. */
TFQ_API int tfq_linear_q8_static(tfq_isa isa, const tfq_packed_weights *w, const float *x,
                                 size_t x_count, size_t x_stride, int32_t m, float scale, float *y,
                                 size_t y_count, size_t y_stride, void *workspace,
                                 size_t workspace_bytes);

/* A valid (unpadded) 2-D convolution over NHWC x [b, h, w, c] with a kh x kw kernel and
 * strides sh, sw: the output [b, ho, wo, N] (ho = (h - kh) / sh + 1, likewise wo) is the
 * matmul of the M = b * ho * wo patches, each K = kh * kw * c floats in (kernel row, kernel
 * column, channel) order, by the weights. */
typedef struct tfq_conv_geometry {
  int32_t b, h, w, c, kh, kw, sh, sw;
} tfq_conv_geometry;

/* tfq_linear_q8 on the patches of g (the numerics contract per patch row), each quantized
 * where it lies in x: no im2col copy.  Bit-identical to tfq_linear_q8 on the im2col rows.
 * w->k must be kh * kw * c; the workspace is tfq_workspace_bytes(w, b * ho * wo); y holds
 * [M][N] at stride N.  TFQ_ERR_SHAPE for a kernel larger than x or a non-positive dim. */
TFQ_API int tfq_conv2d_q8(tfq_isa isa, const tfq_packed_weights *w, const float *x,
                          size_t x_count, const tfq_conv_geometry *g, float *y, size_t y_count,
                          void *workspace, size_t workspace_bytes);

/* Float-activation path, no workspace. */
TFQ_API int tfq_linear_f32(tfq_isa isa, const tfq_packed_weights *w, const float *x,
                           size_t x_count, size_t x_stride, int32_t m, float *y,
                           size_t y_count, size_t y_stride);

/* Dense rows (format version 2, n rows of tfq_row_bytes_dense(k, bits)) -> the padded rows of
 * version 1 (n rows of tfq_row_bytes(k, bits)), the bits past K zero.  Sizes are checked:
 * TFQ_ERR_BUFFER if either buffer is shorter than its layout, TFQ_ERR_SHAPE for bad k/n/bits. */
TFQ_API int tfq_expand_rows(const uint8_t *dense, size_t dense_bytes, int32_t k, int32_t n,
                            int32_t bits, uint8_t *out, size_t out_bytes);

/* The weights as float, out[k * N + n] = (float)(q[n][k] - zp) * scale (one rounding: the
 * values tfq_asr's QuantizedWeight.dequantize() gives, bit for bit).  out_count >= K * N.
 * For layers that run as float arithmetic on a cached copy (depthwise convolutions). */
TFQ_API int tfq_dequantize_f32(const tfq_packed_weights *w, float *out, size_t out_count);

#ifdef __cplusplus
}
#endif

#endif /* TFQ_KERNELS_H */
