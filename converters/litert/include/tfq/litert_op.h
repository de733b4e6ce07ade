/*
 * TFQ_FULLY_CONNECTED: the LiteRT custom op that runs a packed int4/int2 fully connected layer
 * with tfq_linear_q8 (int8 dynamic activations, the numerics contract of kernels.h), or, when
 * the params carry TFQ_OP_FLAG_FLOAT_ACT, with tfq_linear_f32 (float activations, no activation
 * quantization: weight-only Dense layers and LSTM kernels, whose quantized Keras layers compute
 * with float inputs).  Both paths share every validation below; the float path needs no workspace.
 *
 * Inputs, in this order (all but x are constant tensors the lowering writes, 64-byte aligned):
 *   0  x            float32 [..., K]          activations; M = product of the leading dims
 *   1  data         uint8   [N, row_bytes]    packed weights (format.h)
 *   2  scales       float32 or float16 [groups, N]
 *   3  zero_points  uint8   [groups, N]       asymmetric layers only: a symmetric op has one
 *                                             input fewer and every later input moves up one
 *   3|4 bias        float32 [N]               ignored (and may be zeros) unless TFQ_OP_FLAG_BIAS
 *   4|5 header      int32   [TFQ_HEADER_COUNT] format.h: magic, version, bits, symmetric, K, N, G,
 *                                             scale_is_f16
 *   5|6 params      int32   [TFQ_OP_PARAMS_COUNT] the TFQ_OP_PARAM_* values below
 * Output 0: float32 [..., N] (x's shape with the last dimension N), or [M, N] with
 * TFQ_OP_FLAG_FLATTEN (TFLite FULLY_CONNECTED with keep_num_dims = false on a rank > 2 input).
 * GetOutputLayouts sees layouts only, no tensor contents, so the flatten choice is also carried
 * by the params tensor's shape: [TFQ_OP_PARAMS_COUNT] normally, [1, TFQ_OP_PARAMS_COUNT] with
 * TFQ_OP_FLAG_FLATTEN (Run checks that both agree).
 *
 * The symmetric field of the header decides which input count is expected; every tensor's type,
 * shape and byte size is checked against the header before any read.
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
#define TFQ_OP_VERSION 1

/* The params tensor (int32), written by tfq_asr/convert/lowering.py. */
#define TFQ_OP_PARAMS_VERSION 1
#define TFQ_OP_PARAMS_COUNT 4
#define TFQ_OP_PARAM_VERSION 0     /* TFQ_OP_PARAMS_VERSION */
#define TFQ_OP_PARAM_ACTIVATION 1  /* tfq_op_activation */
#define TFQ_OP_PARAM_FLAGS 2       /* TFQ_OP_FLAG_* bits */
#define TFQ_OP_PARAM_LAYER 3       /* layer index, only used to name the layer in errors */

#define TFQ_OP_FLAG_BIAS 1         /* add the bias input */
#define TFQ_OP_FLAG_FLATTEN 2      /* output [M, N] instead of [..., N] */
#define TFQ_OP_FLAG_FLOAT_ACT 4    /* float activations: tfq_linear_f32 instead of tfq_linear_q8
                                      (weight-only layers, LSTM kernels); bias and activation as
                                      on the int8 path.  Any other flag bit is refused. */

typedef enum tfq_op_activation {
  TFQ_ACT_NONE = 0,
  TFQ_ACT_RELU = 1,
  TFQ_ACT_RELU6 = 2,
  TFQ_ACT_RELU_N1_TO_1 = 3,
  TFQ_ACT_SWISH = 4,   /* x * sigmoid(x) = x / (1 + exp(-x)) in float32 */
  TFQ_ACT_COUNT = 5
} tfq_op_activation;

/* ---- TFQ_DEPTHWISE_CONV_1D ------------------------------------------------------------------
 * A depthwise convolution along W with packed int4/int2 taps (a Keras DepthwiseConv1D, which
 * TFLite runs as DEPTHWISE_CONV_2D on [1, 1, T, C]).  Its quantized Keras layer multiplies float
 * inputs by the dequantized taps, and so does the op: on first use it dequantizes the taps to a
 * float copy cached per tensor (tfq_dequantize_f32, bit-equal to the Keras weights), then
 * y[b, h, o, c] = SUM_j x[b, h, o*stride + j*dilation - pad_left, c] * w[j, c]  (+ bias[c]),
 * in float32 with the sum in tap order, outside the input counting as zero.
 * Inputs as TFQ_FULLY_CONNECTED's, with K = taps and N = channels in the header:
 *   0 x float32 [B, H, W, C]; data uint8 [C, row_bytes]; scales [groups, C]; zero points
 *   (asymmetric); bias float32 [C]; header; params int32 [W_out, TFQ_DW_PARAMS_COUNT]
 * Output 0: float32 [B, H, W_out, C], W_out = (W + pad_left + pad_right - dilation*(taps-1)
 * - 1) / stride + 1.  GetOutputLayouts sees no tensor contents, so the params tensor carries
 * W_out as its row count; every row holds the same values and Run checks them all. */
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
 * Inputs as TFQ_FULLY_CONNECTED's, with K = kh*kw*C in the header, plus one:
 *   0 x float32 [B, H, W, C]; data; scales; zero points (asymmetric); bias float32 [N];
 *   header; params int32 [TFQ_CONV_PARAMS_COUNT]; geometry uint8 [kh, kw, sh, sw]
 * Output 0: float32 [B, Ho, Wo, N], Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1.
 * GetOutputLayouts sees no tensor contents, so the last input carries the kernel size and
 * strides as its dimensions (its kh*kw*sh*sw bytes are not read); Run checks them against the
 * params. */
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

#ifdef __cplusplus
}
#endif

#endif /* TFQ_LITERT_OP_H */
