/*
 * TFQ_FULLY_CONNECTED: the LiteRT custom op that runs a packed int4/int2 fully connected layer
 * with tfq_linear_q8 (int8 dynamic activations, the numerics contract of kernels.h), or, when
 * the params carry TFQ_OP_FLAG_FLOAT_ACT, with tfq_linear_f32 (float activations, no activation
 * quantization: weight-only Dense layers and LSTM kernels, whose quantized Keras layers compute
 * with float inputs).  Both paths share every validation below; the float path needs no workspace.
 *
 * Inputs: 0  x     float32 [..., K]   activations; M = product of the leading dims
 *         1  blob  uint8 [N, rest], or [1, N, rest] with TFQ_OP_FLAG_FLATTEN: the layer's
 *                  weight header, params, packed weights, scales, zero points and bias in one
 *                  constant tensor (the blob, below)
 *         2  blob  (optional) a second layer's blob, [N2, rest]: the call then computes
 *                  y = layer2(act1(layer1(x))), the first layer's output (its activation
 *                  applied, TFQ_ACT_SWISH in a Conformer feed-forward block) kept in the op's
 *                  own buffer; layer 2 has K = layer 1's N, and neither layer flattens.  One
 *                  call instead of two and XNNPACK's swish between them.
 * Output 0: float32 [..., N] (x's shape with the last dimension N, N2 with a second blob), or
 * [M, N] with TFQ_OP_FLAG_FLATTEN (TFLite FULLY_CONNECTED with keep_num_dims = false on a rank
 * > 2 input).
 * GetOutputLayouts sees layouts only, no tensor contents, so N and the flatten choice are read
 * from the blob's dims (Run checks that they agree with its descriptor).
 *
 * The blob.  LiteRT 2.3.0 wraps every input and output of a custom op in a new TensorBuffer on
 * every call (about 0.2-0.4 us each on a Zen 4 core), so each op reads all its constants from
 * one uint8 tensor, 64-byte aligned like every constant the lowering writes:
 *   bytes [0, 4 * TFQ_BLOB_WORDS): int32 words, little-endian:
 *     0       TFQ_BLOB_MAGIC
 *     1       TFQ_BLOB_VERSION
 *     2..9    the weight header of format.h (TFQ_HEADER_COUNT values)
 *     10..17  the op's params: TFQ_OP_PARAM_* below, then the op's own values (unused ones 0)
 *     18..25  byte offset and byte count of the sections data, scales, zero points, bias
 *             (a section the layer lacks: 0, 0)
 *     26..31  zero
 *   then the sections as format.h describes them (data [N][row bytes], scales [groups][N]
 *   float32 or float16, zero points [groups][N] uint8 for asymmetric weights only, bias
 *   float32 [N] with TFQ_OP_FLAG_BIAS only), each at an offset that is a multiple of 64, at or
 *   after the words, in that order, not overlapping, inside the tensor.  The leading dims of
 *   the blob carry what GetOutputLayouts needs; the last one, rest, pads the byte count up to
 *   a multiple of their product with zeros.
 *
 * Every size, offset and shape is checked against the header before any read.
 *
 * Errors.  LiteRT ignores the status a custom kernel returns, so a failing call also records
 * the first error of a run in its tfq_litert_context (status, layer index from the params,
 * message) and fills its output with NaN when the output buffer itself is usable.  The runner
 * reads it with tfq_litert_error() after every run and clears it with tfq_litert_clear_error().
 *
 * The op never calls LiteRT itself: the four tensor-buffer functions it needs come in a
 * tfq_litert_api table at context creation (the Python runner passes the addresses it resolved
 * in libLiteRt.so, the C test program passes fakes), so this library links against no LiteRT
 * build and its validation can be tested without one.
 */
#ifndef TFQ_LITERT_OP_H
#define TFQ_LITERT_OP_H

#include <stddef.h>
#include <stdint.h>

#include "tfq/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TFQ_OP_NAME "TFQ_FULLY_CONNECTED"
/* Still 1 although the inputs changed (one blob instead of one input per buffer): LiteRT
 * 2.3.0 resolves custom ops registered with another version as "unresolved".  A file of the
 * old layout fails with "expected 2 inputs (x, blob), got 6" instead. */
#define TFQ_OP_VERSION 1

/* The blob (see above). */
#define TFQ_BLOB_MAGIC 0x42514654  /* "TFQB" read as a little-endian int32 */
#define TFQ_BLOB_VERSION 1
#define TFQ_BLOB_WORDS 32
#define TFQ_BLOB_HEADER 2          /* first word of the weight header */
#define TFQ_BLOB_PARAMS 10         /* first word of the params */
#define TFQ_BLOB_PARAMS_MAX 8
#define TFQ_BLOB_SECTIONS 18       /* first word of the (offset, bytes) pairs */
#define TFQ_BLOB_SECTION_COUNT 4   /* data, scales, zero points, bias */
#define TFQ_BLOB_ALIGN 64

/* The op params (blob words 10..17), written by tfq_asr/convert/lowering.py. */
#define TFQ_OP_PARAMS_VERSION 1
#define TFQ_OP_PARAMS_COUNT 4
#define TFQ_OP_PARAM_VERSION 0     /* TFQ_OP_PARAMS_VERSION */
#define TFQ_OP_PARAM_ACTIVATION 1  /* tfq_op_activation */
#define TFQ_OP_PARAM_FLAGS 2       /* TFQ_OP_FLAG_* bits */
#define TFQ_OP_PARAM_LAYER 3       /* layer index, only used to name the layer in errors */

#define TFQ_OP_FLAG_BIAS 1         /* add the bias section */
#define TFQ_OP_FLAG_FLATTEN 2      /* output [M, N] instead of [..., N] */
#define TFQ_OP_FLAG_FLOAT_ACT 4    /* float activations: tfq_linear_f32 instead of tfq_linear_q8
                                      (weight-only layers, LSTM kernels); bias and activation as
                                      on the int8 path.  Any other flag bit is refused. */
#define TFQ_OP_FLAG_STATIC_ACT 8   /* int8 activations with one calibrated scale for every row,
                                      the float32 in param TFQ_OP_PARAM_STATIC_SCALE
                                      (tfq_linear_q8_static); TFQ_FULLY_CONNECTED with one layer
                                      only, not with TFQ_OP_FLAG_FLOAT_ACT */
#define TFQ_OP_PARAM_STATIC_SCALE 4  /* with TFQ_OP_FLAG_STATIC_ACT: the scale's float32 bits */

typedef enum tfq_op_activation {
  TFQ_ACT_NONE = 0,
  TFQ_ACT_RELU = 1,
  TFQ_ACT_RELU6 = 2,
  TFQ_ACT_RELU_N1_TO_1 = 3,
  TFQ_ACT_SWISH = 4,   /* x * sigmoid(x) = x / (1 + exp(-x)) in float32, exp by a fixed sequence of
                          float operations and fmaf (the same bits on every ISA; within 3.7
                          ulp of float64) */
  TFQ_ACT_COUNT = 5
} tfq_op_activation;

/* ---- TFQ_DEPTHWISE_CONV_1D ------------------------------------------------------------------
 * A depthwise convolution along W with packed int4/int2 taps (a Keras DepthwiseConv1D, which
 * TFLite runs as DEPTHWISE_CONV_2D on [1, 1, T, C]).  Its quantized Keras layer multiplies float
 * inputs by the dequantized taps, and so does the op: on first use it dequantizes the taps to a
 * float copy cached per tensor (tfq_dequantize_f32, bit-equal to the Keras weights), then
 * y[b, h, o, c] = SUM_j x[b, h, o*stride + j*dilation - pad_left, c] * w[j, c]  (+ bias[c]),
 * in float32 with the sum in tap order, outside the input counting as zero.
 * Inputs: 0 x float32 [B, H, W, C]; 1 the blob as TFQ_FULLY_CONNECTED's, with K = taps and
 * N = C in its header and TFQ_DW_PARAMS_COUNT params, of dims [W_out, rest]; 2 (optional) a
 * TFQ_FULLY_CONNECTED blob of a pointwise layer with K = C, [N2, rest], no flatten: the call
 * then also runs that layer over the depthwise output (its activation applied, swish in a
 * Conformer convolution module), y = pointwise(act(depthwise(x))), one call instead of two.
 * Output 0: float32 [B, H, W_out, C], W_out = (W + pad_left + pad_right - dilation*(taps-1)
 * - 1) / stride + 1; with a pointwise blob [B, H * W_out, N2].  GetOutputLayouts sees no tensor contents, so the blob's first dim carries
 * W_out (Run checks it against the geometry). */
#define TFQ_DW_OP_NAME "TFQ_DEPTHWISE_CONV_1D"
#define TFQ_DW_OP_VERSION 1
#define TFQ_DW_PARAMS_VERSION 1
#define TFQ_DW_PARAMS_COUNT 8
/* TFQ_OP_PARAM_VERSION, _ACTIVATION, _FLAGS (TFQ_OP_FLAG_BIAS only), _LAYER as above, then: */
#define TFQ_DW_PARAM_STRIDE 4
#define TFQ_DW_PARAM_DILATION 5
#define TFQ_DW_PARAM_PAD_LEFT 6
#define TFQ_DW_PARAM_PAD_RIGHT 7

/* ---- TFQ_CONV_2D -------------------------------------------------------------------------
 * A VALID, channels-last 2-D convolution with a packed kernel: the op gathers the patches
 * itself (im2col: tap (i, j) of output position (b, oh, ow) is x[b, oh*sh + i, ow*sw + j, :],
 * laid out in (i, j, channel) order, the Keras kernel [kh, kw, C, N] reshaped to [kh*kw*C, N],
 * which is the matrix the quantizer saw) and runs them through the fully connected path above
 * (tfq_linear_q8, or tfq_linear_f32 with TFQ_OP_FLAG_FLOAT_ACT).  The patches are copies, so
 * the result equals TFQ_FULLY_CONNECTED over the patches bit for bit (the graph the lowering
 * replaces: slices, reshapes and a concatenation feeding the fully connected op).
 * Inputs: 0 x float32 [B, H, W, C]; 1 the blob as TFQ_FULLY_CONNECTED's (dims [N, rest]), with
 * K = kh*kw*C in its header and TFQ_CONV_PARAMS_COUNT params; 2 geometry uint8 [kh, kw, sh, sw].
 * Output 0: float32 [B, Ho, Wo, N], Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1.
 * GetOutputLayouts sees no tensor contents, so the geometry input carries the kernel size and
 * strides as its dimensions (its kh*kw*sh*sw bytes are not read; a third input rather than
 * more blob dims, whose padding would cost up to kh*kw*sh*sw*N bytes); Run checks them against
 * the params. */
#define TFQ_CONV_OP_NAME "TFQ_CONV_2D"
#define TFQ_CONV_OP_VERSION 1
#define TFQ_CONV_PARAMS_VERSION 1
#define TFQ_CONV_PARAMS_COUNT 8
/* TFQ_OP_PARAM_VERSION, _ACTIVATION, _FLAGS (TFQ_OP_FLAG_BIAS, TFQ_OP_FLAG_FLOAT_ACT), _LAYER,
 * then: */
#define TFQ_CONV_PARAM_KH 4
#define TFQ_CONV_PARAM_KW 5
#define TFQ_CONV_PARAM_SH 6
#define TFQ_CONV_PARAM_SW 7
#define TFQ_CONV_MAX_KERNEL 64   /* kh, kw at most this; sh, sw too */

/* ---- The subset of the LiteRT C ABI (ai-edge-litert 2.3.0) the op sees ------------------- */
/* Our own declarations with the layouts of the pinned runtime (litert/c/ in google-ai-edge/
 * LiteRT); opaque handles are void pointers, statuses ints (0 = ok). */
#define TFQ_LRT_MAX_RANK 8
#define TFQ_LRT_ELEMENT_FLOAT32 1
#define TFQ_LRT_ELEMENT_INT32 2
#define TFQ_LRT_ELEMENT_UINT8 3
#define TFQ_LRT_ELEMENT_FLOAT16 10
#define TFQ_LRT_LOCK_READ 0
#define TFQ_LRT_LOCK_WRITE 1
#define TFQ_LRT_STATUS_OK 0
#define TFQ_LRT_STATUS_INVALID_ARGUMENT 1
#define TFQ_LRT_STATUS_RUNTIME_FAILURE 3

typedef struct tfq_lrt_layout {  /* 68 bytes */
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dims[TFQ_LRT_MAX_RANK];
  uint32_t strides[TFQ_LRT_MAX_RANK];
} tfq_lrt_layout;

typedef struct tfq_lrt_tensor_type {  /* 72 bytes */
  int32_t element_type;
  tfq_lrt_layout layout;
} tfq_lrt_tensor_type;

typedef void *tfq_lrt_buffer;

typedef struct tfq_lrt_custom_kernel {
  int (*init)(void *user_data, const void *init_data, size_t init_data_size);
  int (*get_output_layouts)(void *user_data, size_t num_inputs, const tfq_lrt_layout *inputs,
                            size_t num_outputs, tfq_lrt_layout *outputs);
  int (*run)(void *user_data, size_t num_inputs, const tfq_lrt_buffer *inputs,
             size_t num_outputs, tfq_lrt_buffer *outputs);
  int (*destroy)(void *user_data);
} tfq_lrt_custom_kernel;

/* The tensor-buffer functions of the runtime (LiteRtGetTensorBufferTensorType,
 * LiteRtGetTensorBufferPackedSize, LiteRtLockTensorBuffer, LiteRtUnlockTensorBuffer). */
typedef struct tfq_litert_api {
  int (*get_tensor_type)(tfq_lrt_buffer buffer, tfq_lrt_tensor_type *type);
  int (*get_packed_size)(tfq_lrt_buffer buffer, size_t *bytes);
  int (*lock)(tfq_lrt_buffer buffer, void **host_addr, int lock_mode);
  int (*unlock)(tfq_lrt_buffer buffer);
} tfq_litert_api;

/* ---- Entry points -------------------------------------------------------------------------- */
typedef struct tfq_litert_context tfq_litert_context;

/* The op's kernel table, to pass to LiteRtAddCustomOpKernelOption with a context as user data. */
TFQ_API const tfq_lrt_custom_kernel *tfq_litert_kernel(void);
TFQ_API const char *tfq_litert_op_name(void);
/* TFQ_DEPTHWISE_CONV_1D's table; the same context serves both ops. */
TFQ_API const tfq_lrt_custom_kernel *tfq_litert_depthwise_kernel(void);
TFQ_API const char *tfq_litert_depthwise_op_name(void);
/* TFQ_CONV_2D's table; the same context serves all three ops. */
TFQ_API const tfq_lrt_custom_kernel *tfq_litert_conv_kernel(void);
TFQ_API const char *tfq_litert_conv_op_name(void);

/* One context per compiled model (it holds the error slot and a workspace); NULL if api is
 * incomplete or memory is short.  Destroy it after the compiled model. */
TFQ_API tfq_litert_context *tfq_litert_context_create(const tfq_litert_api *api);
TFQ_API void tfq_litert_context_destroy(tfq_litert_context *ctx);

/* The first error recorded since the last clear: returns its tfq_status (TFQ_OK if none) and
 * copies "message" (NUL-terminated, truncated to message_size) and the layer index (-1 if
 * unknown).  Calls counts the op calls since the last clear. */
TFQ_API int tfq_litert_error(const tfq_litert_context *ctx, char *message, size_t message_size,
                             int32_t *layer, int64_t *calls);
TFQ_API void tfq_litert_clear_error(tfq_litert_context *ctx);

/* 1 if the n bytes are a structurally sound .tflite (every table, vtable, vector, string and
 * buffer LiteRT reads at load lies inside them); else 0 with the first problem in why.  Call it
 * before LiteRtCreateModelFromFile: LiteRT 2.3.0 follows offsets unchecked and crashes on some
 * damaged files (stream/tflite_check.c). */
TFQ_API int tfq_tflite_check(const uint8_t *bytes, size_t n, char *why, size_t why_size);

#ifdef __cplusplus
}
#endif

#endif /* TFQ_LITERT_OP_H */
