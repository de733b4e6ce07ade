"""Lower a Keras model with quantized Dense layers, LSTM kernels and depthwise convolutions to a
.tflite with TFQ custom ops.

Steps (``lower_to_tflite``):

1. Clone the model (the caller's model is never modified) and set every quantized kernel (a
   Dense layer's, or an LSTM's "lstmN/kernel" / "lstmN/recurrent_kernel") to its dequantized
   values ``w' = (q - zp) * s``.
2. Convert with ``tf.lite.TFLiteConverter``: float, builtin ops only, batch 1 and a fixed input
   shape (``input_shape``).  Fixed, because a Conformer's shapes depend on the time length
   through Shape ops: with a dynamic [1, T, 80] input the file converts and runs in the
   classic TFLite interpreter, but LiteRT's CompiledModel cannot size its outputs after a
   resize (the layouts stay stale and the output is wrong), see ``tfq_asr.runtime.litert``.
   Streaming runs fixed chunks anyway; a whole utterance needs a file for its length or padding.
   The Mul-into-FULLY_CONNECTED fusion is disabled so that a scale after a Dense (the macaron
   1/2) is not folded into its weights.
3. Rewrite the flatbuffer: every FULLY_CONNECTED whose float weight equals a quantized layer's
   dequantized kernel (transposed, bit for bit: that is the proof the op computes that layer)
   becomes ``TFQ_FULLY_CONNECTED`` (converters/litert/include/tfq/litert_op.h) with one constant
   input, the layer's blob (``tfq_asr.convert.op_blob``: the op params and the packed buffers of
   ``tfq_asr.convert.packing``, dense rows, format version 2: no padding in the file), on the
   int8 path (activation mode "dynamic") or the
   float-activation path (mode "none", TFQ_OP_FLAG_FLOAT_ACT).  A quantized layer without such
   an op, or with a float FULLY_CONNECTED op that names the layer and has a weight of its shape
   that is not its kernel, is an error naming the layer (e.g. the converter folded something
   into its weights).

   What the converter (TF 2.21) emits for an unrolled LSTM (``unroll=True``, fixed steps, as in
   ``tfq_asr.models.streaming.build_lstm_step``): per step and layer two FULLY_CONNECTED ops
   without bias, ``x_t @ kernel`` (weight kernel^T [4u, in]) and ``h @ recurrent_kernel``
   (weight recurrent_kernel^T [4u, u]), the four gates concatenated as in Keras (i, f, c, o);
   the bias is a separate ADD, nothing is batched across steps and nothing is folded, so every
   step's op carries the dequantized kernel bit for bit.  All ops of one kernel share its
   blob (the file holds each kernel once).  The input kernel's ops read the rows of one
   UNPACK of the layer's input; they become one op over all the steps (_batch_unpacked_rows).
   A rolled LSTM (``unroll=False``) would become the fused UNIDIRECTIONAL_SEQUENCE_LSTM op,
   which LiteRT cannot load and whose per-gate weights no FULLY_CONNECTED carries, so the
   conversion unrolls it over the fixed input length first (``_unroll_lstms``).
   Depthwise convolutions (``depthwise``: quantized DepthwiseConv1D taps): every
   DEPTHWISE_CONV_2D whose [1, 1, taps, C] filter is the dequantized taps bit for bit becomes
   ``TFQ_DEPTHWISE_CONV_1D`` (litert_op.h) with the packed taps, on float activations as its
   Keras layer computes.  The converter folds a BatchNorm that follows a depthwise convolution
   into its filter and bias (a per-channel factor a: filter = taps * a); an op whose tensors
   name the layer and whose filter is the taps times a per-channel factor (within 4 ulp) is
   accepted, and the factor goes into float32 scales (s * a).  Those taps then equal the
   converter's within one rounding, not bit for bit.  Depthwise convolutions left in float
   with more than 25 taps are split for XNNPACK (``_split_long_depthwise``).
   TFQ_FULLY_CONNECTED ops that read the same tensor and differ only in their weights (the
   attention's q, k and v projections) become one op over the joined output channels and a
   builtin SPLIT (``_fuse_shared_input``): LiteRT's fixed cost per custom op call is paid
   once, the input is quantized once, the outputs are the same bit for bit.
   A layer, swish and the layer after it run as one op call with both blobs: a feed-forward
   block's two Dense layers (``_fuse_feed_forward``) and a convolution module's depthwise and
   second pointwise layers (``_fuse_depthwise_pointwise``); the swish is then the op's own.
4. Drop the float weights no op uses any more, move every constant buffer behind the
   flatbuffer at 64-byte aligned file offsets (Buffer.offset/size: LiteRT needs constant
   inputs of custom ops 64-byte aligned), add the layer names as metadata ``tfq_asr`` (the
   runner names a failing layer with them), and write the file atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from tfq_asr.convert import op_blob, packing
from tfq_asr.quant.numerics import QuantizedWeight

OP_NAME = "TFQ_FULLY_CONNECTED"      # litert_op.h TFQ_OP_NAME
OP_VERSION = 1
PARAMS_VERSION = 1                   # TFQ_OP_PARAMS_VERSION
PARAMS_COUNT = 4                     # TFQ_OP_PARAMS_COUNT: version, activation, flags, layer
FLAG_BIAS, FLAG_FLATTEN, FLAG_FLOAT_ACT, FLAG_STATIC_ACT = 1, 2, 4, 8  # TFQ_OP_FLAG_*
PARAM_STATIC_SCALE = 4               # TFQ_OP_PARAM_STATIC_SCALE: the scale's float32 bits
ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1, ACT_SWISH = 0, 1, 2, 3, 4  # tfq_op_activation
DW_OP_NAME = "TFQ_DEPTHWISE_CONV_1D"  # litert_op.h TFQ_DW_OP_NAME
CONV_OP_NAME = "TFQ_CONV_2D"           # litert_op.h TFQ_CONV_OP_NAME
CONV_OP_VERSION = 1
CONV_PARAMS_VERSION, CONV_PARAMS_COUNT = 1, 8  # TFQ_CONV_PARAMS_*
DW_OP_VERSION = 1
DW_PARAMS_VERSION, DW_PARAMS_COUNT = 1, 8  # version, activation, flags, layer, stride, dilation, pad l/r
METADATA_NAME = "tfq_asr"
ALIGN = packing.BUFFER_ALIGN

# TFLite schema numbers used here.
_FULLY_CONNECTED, _CUSTOM = 9, 32
_FLOAT32, _FLOAT16, _INT32, _UINT8 = 0, 1, 2, 3
# TFLite fused activation -> tfq_op_activation
_ACTIVATIONS = {0: ACT_NONE, 1: ACT_RELU, 2: ACT_RELU_N1_TO_1, 3: ACT_RELU6}


class LoweringError(ValueError):
    """The model cannot be lowered as asked; the message names the layer."""


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _clone_with_dequantized(float_model, quantized: Mapping[str, QuantizedWeight]):
    import tf_keras as keras
    from .im2col import PatchDense, why_not_patch_dense
    # Quantized Conv2D kernels: the layer becomes im2col + matmul (one FULLY_CONNECTED).
    by_name = _layers_by_name(float_model)
    convs = {n for n in quantized if "/" not in n and isinstance(by_name.get(n), keras.layers.Conv2D)
             and not isinstance(by_name.get(n), keras.layers.DepthwiseConv2D)}
    for n in convs:
        why = why_not_patch_dense(by_name[n])
        if why:
            raise LoweringError(f"layer {n!r}: {why}")

    def clone_layer(layer):
        if layer.name in convs:
            return PatchDense.from_conv(layer)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(float_model, clone_function=clone_layer)
    for dst in clone.layers:
        src = by_name.get(dst.name)
        if src is None:
            continue
        if dst.name in convs:
            dst.set_from_conv_weights(*src.get_weights())
        elif src.weights:
            dst.set_weights(src.get_weights())
    clone_by_name = _layers_by_name(clone)
    for name, qw in quantized.items():
        layer_name, _, role = name.partition("/")
        layer = clone_by_name.get(layer_name)
        if layer is None:
            raise LoweringError(f"layer {name!r}: no such layer in model {float_model.name!r}")
        if isinstance(layer, keras.layers.LSTM) and role in ("kernel", "recurrent_kernel"):
            # LSTM kernels: an unrolled LSTM (_convert unrolls rolled ones) converts to one
            # FULLY_CONNECTED per step and kernel
            kernel = getattr(layer.cell, role)
            if tuple(kernel.shape) != tuple(qw.shape):
                raise LoweringError(f"layer {name!r}: kernel {tuple(kernel.shape)} but quantized "
                                    f"weight {tuple(qw.shape)}")
            if qw.spec.bits not in packing.SUPPORTED_BITS:
                raise LoweringError(f"layer {name!r}: {qw.spec.bits}-bit weights; the packed format "
                                    f"takes {packing.SUPPORTED_BITS}")
            kernel.assign(qw.dequantize())
            continue
        if role or not isinstance(layer, (keras.layers.Dense, PatchDense)):
            raise LoweringError(f"layer {name!r}: a {type(layer).__name__}, only Dense and VALID Conv2D "
                                f"layers and LSTM kernels ('layer/kernel', 'layer/recurrent_kernel') lower "
                                f"to {OP_NAME}")
        if qw.spec.bits not in packing.SUPPORTED_BITS:
            raise LoweringError(f"layer {name!r}: {qw.spec.bits}-bit weights; the packed format "
                                f"takes {packing.SUPPORTED_BITS}")
        kernel = layer.kernel
        if tuple(kernel.shape) != tuple(qw.shape):
            raise LoweringError(f"layer {name!r}: kernel {tuple(kernel.shape)} but quantized "
                                f"weight {tuple(qw.shape)}")
        kernel.assign(qw.dequantize())
    return clone


def _layers_by_name(model) -> dict:
    """{name: layer} of a model's top-level layers (get_layer searches the list every call:
    seconds over a Conformer M's thousand lookups)."""
    return {layer.name: layer for layer in model.layers}


def keras_io_order(model) -> dict:
    """The Keras model's input and output names in its own order, for the file's metadata: the
    converter orders a signature's outputs by name (it flattens the dict the function returns),
    so `tfq_asr.runtime.load(...).run` reorders them back by these."""
    return {"inputs": list(model.input_names), "outputs": list(model.output_names)}


def _rolled_lstms(model) -> list[str]:
    import tf_keras as keras
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.LSTM) and not layer.unroll]


def _unroll_lstms(model, input_shapes):
    """`model` with every rolled top-level LSTM unrolled over the fixed input shapes (the same
    weights; other layers rebuilt from their configs).  The converter makes a rolled LSTM the
    fused UNIDIRECTIONAL_SEQUENCE_LSTM op, whose state tensors are variable tensors: LiteRT
    2.3.0's CompiledModel refuses every such file at load ("Variable tensors not yet
    supported"), and its kernels cannot become packed ops.  Unrolled, each step's kernels are
    FULLY_CONNECTED ops like the streaming step model's."""
    import tf_keras as keras
    if not _rolled_lstms(model):
        return model
    inputs = [keras.Input(batch_shape=tuple(shape), name=name)
              for shape, name in zip(input_shapes, model.input_names)]

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.LSTM):
            config["unroll"] = True
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0],
                                         clone_function=clone_layer)
    except Exception as e:  # e.g. a subclassed model: its graph cannot be rebuilt layer by layer
        raise LoweringError(f"model {model.name!r}: its LSTM layers {_rolled_lstms(model)} must be unrolled "
                            f"(LiteRT cannot load the fused LSTM op) and the model could not be rebuilt "
                            f"with unroll=True ({type(e).__name__}: {e}); build them with unroll=True") from None
    by_name = _layers_by_name(model)
    for dst in clone.layers:
        src = by_name.get(dst.name)
        if src is not None and src.weights:
            dst.set_weights(src.get_weights())
    return clone


def _convert(model, input_shapes, dynamic_range_int8: bool = False) -> bytes:
    """Float TFLite conversion with one fixed shape per model input (signature inputs named
    after the Keras inputs, outputs after the Keras outputs); rolled LSTMs are unrolled first
    (_unroll_lstms)."""
    import tensorflow as tf
    model = _unroll_lstms(model, input_shapes)
    specs = [tf.TensorSpec(shape, tf.float32, name=name) for shape, name in zip(input_shapes, model.input_names)]
    out_names = list(model.output_names)

    @tf.function(input_signature=specs)
    def serve(*xs):
        y = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return dict(zip(out_names, ys))

    # The converter saves a SavedModel of the object it is given. A bare module holding only
    # the variables the function captures writes the same file as the Keras model itself
    # (signatures, fused LSTMs) without tracing every layer for Keras serialisation: 1.5-3x
    # faster conversions.
    fn = serve.get_concrete_function()
    root = tf.Module()
    root.captured_variables = list(fn.variables)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], root)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv._experimental_disable_fuse_mul_and_fc = True  # keep a following Mul out of the weights
    if dynamic_range_int8:  # the LiteRT-native baseline: int8 weights, dynamic int8 activations
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def _input_shape(model, input_shape):
    """Fixed shapes of every model input: `input_shape` fixes the first (single-input models
    with an unknown time length); any other input must declare a fully known shape."""
    shapes = []
    for i, tensor in enumerate(model.inputs):
        declared = tuple(tensor.shape)
        if i == 0 and input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
            if len(shape) != len(declared) or any(d is not None and d != s
                                                  for d, s in zip(declared[1:], shape[1:])):
                raise LoweringError(f"input_shape {shape} does not fit the model's input {declared}")
            if any(s < 1 for s in shape):
                raise LoweringError(f"input_shape {shape}: every dimension must be positive")
        else:
            shape = (1,) + declared[1:] if declared[0] is None else declared
            if any(d is None for d in shape):
                raise LoweringError(f"model {model.name!r} input {model.input_names[i]!r} has shape {declared}: "
                                    f"pass a fixed input_shape, e.g. (1, 400, {declared[-1]}) for 4 s of "
                                    "10 ms frames")
        shapes.append(shape)
    return shapes


def _array(model_obj, tensor) -> np.ndarray | None:
    buf = model_obj.buffers[tensor.buffer]
    if buf.data is None or len(buf.data) == 0:
        return None
    dtype = {_FLOAT32: np.float32, _INT32: np.int32, _UINT8: np.uint8}.get(tensor.type)
    if dtype is None:
        return None
    return np.frombuffer(np.asarray(buf.data, dtype=np.uint8).tobytes(), dtype).reshape(
        [int(d) for d in tensor.shape])


def _builtin(model_obj, op) -> int:
    code = model_obj.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def _names(sg, op) -> str:
    parts = [sg.tensors[i].name for i in list(op.inputs) + list(op.outputs) if i >= 0]
    return " ".join(p.decode() if isinstance(p, bytes) else str(p) for p in parts)


def _add_tensor(schema, model_obj, sg, name: str, array: np.ndarray, tflite_type: int) -> int:
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
    model_obj.buffers.append(buf)
    t = schema.TensorT()
    t.name = name.encode()
    t.shape = np.array(array.shape, np.int32)
    t.type = tflite_type
    t.buffer = len(model_obj.buffers) - 1
    sg.tensors.append(t)
    return len(sg.tensors) - 1


# XNNPACK (LiteRT 2.3.0) runs a depthwise convolution of up to 25 taps with its DWConv kernels,
# and a longer one (the 32 taps of Conformer S/M/L) as a grouped IGEMM, one GEMM per channel:
# measured 36 us for 32 taps x 256 channels x 4 frames, about 10x a 16-tap DWConv.  So the
# lowering splits a longer one into pieces of at most this many taps over slices of its input,
# summed by ADD ops (float ops; the sum order changes within float rounding).
MAX_DWCONV_TAPS = 25
_ADD, _DEPTHWISE_CONV_2D, _SLICE = 0, 4, 65


def _shared_blob(schema, model_obj, sg, shared: dict, name: str, blob: np.ndarray) -> int:
    """A constant tensor for an op blob, or the one added before with the same name, shape and
    bytes: ops of one layer (an unrolled LSTM: one per step) share it, so the file holds each
    kernel once."""
    key = (id(sg), name, blob.shape, hashlib.sha256(blob.tobytes()).hexdigest())
    if key not in shared:
        shared[key] = _add_tensor(schema, model_obj, sg, name, blob, _UINT8)
    return shared[key]


def _opcode(schema, model_obj, builtin: int) -> int:
    for i, code in enumerate(model_obj.operatorCodes):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == builtin and not code.customCode:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model_obj.operatorCodes.append(code)
    return len(model_obj.operatorCodes) - 1


def _split_long_depthwise(schema, model_obj, max_taps: int = MAX_DWCONV_TAPS) -> int:
    """Rewrite every DEPTHWISE_CONV_2D with a [1, 1, taps > max_taps, C] constant float kernel,
    VALID padding, stride and dilation 1 and multiplier 1 as pieces of at most max_taps taps:
    y = SUM_p DW(SLICE(x, taps of p), w[taps of p]) (the bias in the first piece, the fused
    activation on the last ADD).  Returns how many ops were split."""
    split = 0
    for sg in model_obj.subgraphs:
        ops = []
        for op in sg.operators:
            o = op.builtinOptions
            w_t = sg.tensors[op.inputs[1]] if _builtin(model_obj, op) == _DEPTHWISE_CONV_2D else None
            w = _array(model_obj, w_t) if w_t is not None and w_t.type == _FLOAT32 else None
            x_t = sg.tensors[op.inputs[0]] if w is not None else None
            if (w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[1] != 1 or w.shape[2] <= max_taps
                    or o.padding != schema.Padding.VALID or o.strideH != 1 or o.strideW != 1
                    or o.dilationHFactor != 1 or o.dilationWFactor != 1 or o.depthMultiplier not in (0, 1)
                    or x_t.shape is None or len(x_t.shape) != 4 or int(x_t.shape[0]) != 1):
                ops.append(op)
                continue
            taps, channels = int(w.shape[2]), int(w.shape[3])
            x_shape = [int(d) for d in x_t.shape]
            out_w = x_shape[2] - taps + 1
            pieces = -(-taps // max_taps)
            bounds = [round(i * taps / pieces) for i in range(pieces + 1)]
            bias = _array(model_obj, sg.tensors[op.inputs[2]]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            base = (x_t.name.decode() if isinstance(x_t.name, bytes) else str(x_t.name)) + "/tfq_dw_split"
            partial = []
            for p in range(pieces):
                a, b = bounds[p], bounds[p + 1]
                begin = _add_tensor(schema, model_obj, sg, f"{base}/begin{p}", np.array([0, 0, a, 0], np.int32), _INT32)
                size = _add_tensor(schema, model_obj, sg, f"{base}/size{p}",
                                   np.array([1, x_shape[1], out_w + b - a - 1, channels], np.int32), _INT32)
                xs = _add_activation_tensor(schema, sg, f"{base}/x{p}", [1, x_shape[1], out_w + b - a - 1, channels])
                sl = schema.OperatorT()
                sl.opcodeIndex = _opcode(schema, model_obj, _SLICE)
                sl.inputs, sl.outputs = np.array([op.inputs[0], begin, size], np.int32), np.array([xs], np.int32)
                sl.builtinOptionsType, sl.builtinOptions = schema.BuiltinOptions.SliceOptions, schema.SliceOptionsT()
                wp = _add_tensor(schema, model_obj, sg, f"{base}/w{p}", np.ascontiguousarray(w[:, :, a:b, :]), _FLOAT32)
                bp = _add_tensor(schema, model_obj, sg, f"{base}/b{p}",
                                 bias if (p == 0 and bias is not None) else np.zeros(channels, np.float32), _FLOAT32)
                yp = _add_activation_tensor(schema, sg, f"{base}/y{p}", [1, x_shape[1], out_w, channels])
                dw = schema.OperatorT()
                dw.opcodeIndex = op.opcodeIndex
                dw.inputs, dw.outputs = np.array([xs, wp, bp], np.int32), np.array([yp], np.int32)
                opts = schema.DepthwiseConv2DOptionsT()
                opts.padding, opts.strideH, opts.strideW = schema.Padding.VALID, 1, 1
                opts.depthMultiplier, opts.dilationHFactor, opts.dilationWFactor = 1, 1, 1
                opts.fusedActivationFunction = 0
                dw.builtinOptionsType, dw.builtinOptions = schema.BuiltinOptions.DepthwiseConv2DOptions, opts
                ops += [sl, dw]
                partial.append(yp)
            acc = partial[0]
            for p in range(1, pieces):
                add = schema.OperatorT()
                add.opcodeIndex = _opcode(schema, model_obj, _ADD)
                last = p == pieces - 1
                out = op.outputs[0] if last else _add_activation_tensor(schema, sg, f"{base}/sum{p}",
                                                                        [1, x_shape[1], out_w, channels])
                add.inputs, add.outputs = np.array([acc, partial[p]], np.int32), np.array([out], np.int32)
                aopts = schema.AddOptionsT()
                aopts.fusedActivationFunction = o.fusedActivationFunction if last else 0
                add.builtinOptionsType, add.builtinOptions = schema.BuiltinOptions.AddOptions, aopts
                ops.append(add)
                acc = out
            split += 1
        sg.operators = ops
    return split


def _add_activation_tensor(schema, sg, name: str, shape) -> int:
    t = schema.TensorT()
    t.name = name.encode()
    t.shape = np.array(shape, np.int32)
    t.type = _FLOAT32
    t.buffer = 0
    sg.tensors.append(t)
    return len(sg.tensors) - 1



def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _power_of_two_match(expected, w: np.ndarray, text: str):
    """The converter folds a constant multiply after a Dense (the macaron 1/2) into its weights
    and bias even with the Mul fusion disabled.  A power-of-two factor c keeps the grid: w = c*w'
    exactly, and the op with scales c*s_w and the folded bias computes c*(s_a*SUM + b) bit for
    bit (powers of two commute with float rounding away from under/overflow).  Accepted only for
    the layer the op's tensor names mention and only if every element matches exactly."""
    for name, e in expected.items():
        if e.shape != w.shape or f"/{name}/" not in text:
            continue
        c = _power_of_two_factor(e, w)
        if c is not None:
            return [name], c
    return [], 1.0


def _power_of_two_factor(e: np.ndarray, w: np.ndarray) -> float | None:
    """c if w is exactly c * e (same shape) for a power of two c > 0, else None."""
    i = int(np.argmax(np.abs(e)))
    if e.flat[i] == 0:
        return None
    c = float(w.flat[i]) / float(e.flat[i])
    mantissa, _ = np.frexp(c)
    if c > 0 and abs(mantissa) == 0.5 and _bit_equal((e * np.float32(c)).astype(np.float32), w):
        return c
    return None


def _layer_of(key: str) -> str:
    """The Keras layer of a key: "lstm0/kernel" -> "lstm0", "ffn1" -> "ffn1"."""
    return key.partition("/")[0]


def _match_layers(model_obj, quantized):
    """[(subgraph index, op index, layer name, factor)] for every FULLY_CONNECTED computing a
    quantized layer, proven by its weight being the dequantized kernel transposed, bit for bit
    (or exactly a power of two times it, see _power_of_two_match).  Raises naming the layer if
    one has no such op, or if a float FULLY_CONNECTED whose tensors name the layer has a weight
    of the kernel's shape that is not the kernel (some ops carry it, others a folded copy)."""
    by_digest: dict[bytes, list[str]] = {}
    expected = {}
    for name, qw in quantized.items():
        w = np.ascontiguousarray(qw.dequantize().T, dtype=np.float32)
        expected[name] = w
        by_digest.setdefault(hashlib.sha256(w.tobytes()).digest(), []).append(name)
    matches, seen, unmatched = [], set(), []
    for si, sg in enumerate(model_obj.subgraphs):
        for oi, op in enumerate(sg.operators):
            if _builtin(model_obj, op) != _FULLY_CONNECTED or len(op.inputs) < 2:
                continue
            wt = sg.tensors[op.inputs[1]]
            w = _array(model_obj, wt) if wt.type == _FLOAT32 else None
            if w is None:
                continue
            w = np.ascontiguousarray(w)
            names = by_digest.get(hashlib.sha256(w.tobytes()).digest(), [])
            names = [n for n in names if _bit_equal(expected[n], w)]
            factor = 1.0
            if not names:
                names, factor = _power_of_two_match(expected, w, _names(sg, op))
            if len(names) > 1:  # identical kernels: let the converter's tensor names decide
                text = _names(sg, op)
                named = [n for n in names if f"/{_layer_of(n)}/" in text]
                if len(named) != 1:
                    raise LoweringError(f"layers {names} have identical quantized kernels and "
                                        f"FULLY_CONNECTED op {oi} ({text}) names none of them uniquely")
                names = named
            if names:
                matches.append((si, oi, names[0], factor))
                seen.add(names[0])
            else:
                unmatched.append((oi, w, _names(sg, op)))
    for name in seen:  # a layer computed partly by packed ops, partly by a float op of its shape
        for oi, w, text in unmatched:
            if w.shape == expected[name].shape and f"/{_layer_of(name)}/" in text:
                d = np.abs(w - expected[name]).max()
                raise LoweringError(f"layer {name!r}: FULLY_CONNECTED op {oi} ({text}) names the layer "
                                    f"and has a weight of its shape that differs from its dequantized "
                                    f"kernel by up to {d:.3g} while other ops carry it bit for bit "
                                    "(folded scale or norm?)")
    for name in quantized:
        if name in seen:
            continue
        hints = []
        for sg in model_obj.subgraphs:
            for op in sg.operators:
                if f"/{_layer_of(name)}/" in _names(sg, op) and len(op.inputs) > 1:
                    w = _array(model_obj, sg.tensors[op.inputs[1]])
                    if w is not None and w.dtype == np.float32 and w.shape == expected[name].shape:
                        d = np.abs(w - expected[name])
                        hints.append(f"op {_builtin(model_obj, op)} has a weight of that shape that "
                                     f"differs by up to {d.max():.3g} (folded scale or norm?)")
                    else:
                        hints.append(f"op {_builtin(model_obj, op)} mentions it")
        raise LoweringError(f"layer {name!r}: no FULLY_CONNECTED op of the converted model carries "
                            f"its dequantized kernel bit for bit; "
                            + ("; ".join(hints[:3]) if hints else "no op mentions the layer"))
    return matches


def _replace(schema, model_obj, si, oi, name, qw: QuantizedWeight, factor: float, layer_index: int,
             custom_code: int, float_act: bool, shared: dict, static_scale: float | None = None):
    sg = model_obj.subgraphs[si]
    op = sg.operators[oi]
    opts = op.builtinOptions
    act = getattr(opts, "fusedActivationFunction", 0)
    if act not in _ACTIVATIONS:
        raise LoweringError(f"layer {name!r}: fused activation {act} has no TFQ equivalent")
    if getattr(opts, "weightsFormat", 0) != 0:
        raise LoweringError(f"layer {name!r}: FULLY_CONNECTED weights format {opts.weightsFormat}")
    x = sg.tensors[op.inputs[0]]
    flatten = not getattr(opts, "keepNumDims", False) and len(x.shape) > 2
    k, n = qw.shape
    spec = qw.spec
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias_t = sg.tensors[op.inputs[2]]
        bias = _array(model_obj, bias_t) if bias_t.type == _FLOAT32 else None
        if bias is None or bias.shape != (n,):
            raise LoweringError(f"layer {name!r}: FULLY_CONNECTED bias is not a constant float [N]")
    scales = qw.scales.astype(np.float32) * np.float32(factor)
    if not np.array_equal(scales / np.float32(factor), qw.scales.astype(np.float32)) or (
            spec.scale_dtype == "float16" and not np.array_equal(
                scales.astype(np.float16).astype(np.float32), scales)):
        raise LoweringError(f"layer {name!r}: the converter folded a factor {factor} into the "
                            f"weights that the {spec.scale_dtype} scales cannot absorb exactly")
    p = packing.dense_rows(packing.pack_weights(
        qw.q.astype(np.int16), spec.bits, spec.symmetric, spec.group_length(k), scales,
        None if qw.zero_points is None else qw.zero_points, scale_dtype=np.dtype(spec.scale_dtype)))
    flags = ((FLAG_BIAS if bias is not None else 0) | (FLAG_FLATTEN if flatten else 0)
             | (FLAG_FLOAT_ACT if float_act else 0) | (FLAG_STATIC_ACT if static_scale is not None else 0))
    params = [PARAMS_VERSION, _ACTIVATIONS[act], flags, layer_index]
    if static_scale is not None:  # its float32 bits, as an int32 param
        assert len(params) == PARAM_STATIC_SCALE
        params.append(int(np.array([static_scale], np.float32).view(np.int32)[0]))
    blob = op_blob.build(p, params, bias, (1, n) if flatten else (n,))
    new = schema.OperatorT()
    new.opcodeIndex = custom_code
    new.inputs = np.array([op.inputs[0], _shared_blob(schema, model_obj, sg, shared, f"{name}/tfq_blob", blob)],
                          np.int32)
    new.outputs = np.array(op.outputs[:1], np.int32)
    sg.operators[oi] = new
    return {"bits": spec.bits, "symmetric": spec.symmetric, "group_size": spec.group_length(k),
            "k": k, "n": n, "scale_dtype": spec.scale_dtype, "activation": _ACTIVATIONS[act],
            "float_activations": float_act,
            "activation_mode": "none" if float_act else "static" if static_scale is not None else "dynamic",
            "bytes": int(blob.size),
            "float_bytes": 4 * k * n, "folded_factor": factor}


# LiteRT's fixed cost per custom op call (about 1 us: a TensorBuffer per input and output,
# every call) is a large part of a small layer's time at a few rows; q, k and v as one op save
# two of those calls and two quantizations of their shared input per attention block (2.3 us
# a block at 4 rows x 144, BENCHMARKS.md 2026-12-02 (late)).
_SPLIT = 49


def _fuse_shared_input(schema, model_obj, custom_code: int, op_names: dict, layer_names: list,
                       shared: dict) -> list:
    """Join TFQ_FULLY_CONNECTED ops that read the same input tensor and differ only in their
    weights (same bits, K, group size, scale type, N, activation and flags, no flatten) into
    one op over the concatenated output channels, followed by a builtin SPLIT into the original
    output tensors.  Each output column is computed as before (same quantized input row, same
    column weights), so the outputs are bit for bit those of the separate ops.  op_names: (si,
    op object id) -> layer name; the joined op is named "a+b+c" in layer_names (appended).
    Returns [(layer names joined, bytes of their blob)]."""
    groups_done = []
    split_code = None
    for si, sg in enumerate(model_obj.subgraphs):
        by_input: dict[tuple, list[int]] = {}
        params_of = {}
        for oi, op in enumerate(sg.operators):
            if op.opcodeIndex != custom_code or len(op.inputs) != 2:
                continue
            blob = op_blob.read(_array(model_obj, sg.tensors[op.inputs[1]]))
            out = sg.tensors[op.outputs[0]]
            params = blob.params.copy()
            params[3] = 0  # the layer index: the only param that may differ
            if params[2] & FLAG_FLATTEN:
                continue
            key = (int(op.inputs[0]), tuple(blob.header.tolist()), tuple(params.tolist()),
                   tuple(int(d) for d in out.shape), tuple(v is None for v in blob.sections.values()))
            by_input.setdefault(key, []).append(oi)
            params_of[oi] = blob.params
        fused_at, drop = {}, set()
        for key, members in by_input.items():
            if len(members) < 2:
                continue
            ops = [sg.operators[i] for i in members]
            names = [op_names[(si, id(op))] for op in ops]
            joined = "+".join(names)
            if joined not in layer_names:  # the same layers may join at several places
                layer_names.append(joined)
            params = params_of[members[0]].copy()
            params[3] = layer_names.index(joined)
            blob = op_blob.concat_columns([_array(model_obj, sg.tensors[op.inputs[1]]) for op in ops],
                                          params)
            out_shape = [int(d) for d in sg.tensors[ops[0].outputs[0]].shape]
            n = out_shape[-1]
            fused_out = _add_activation_tensor(schema, sg, f"{joined}/tfq_fused", out_shape[:-1] + [n * len(ops)])
            new = schema.OperatorT()
            new.opcodeIndex = custom_code
            new.inputs = np.array([ops[0].inputs[0], _shared_blob(schema, model_obj, sg, shared,
                                                                   f"{joined}/tfq_blob", blob)], np.int32)
            new.outputs = np.array([fused_out], np.int32)
            if split_code is None:
                split_code = _opcode(schema, model_obj, _SPLIT)
            split = schema.OperatorT()
            split.opcodeIndex = split_code
            axis = _add_tensor(schema, model_obj, sg, f"{joined}/split_axis",
                               np.array(len(out_shape) - 1, np.int32), _INT32)
            split.inputs = np.array([axis, fused_out], np.int32)
            split.outputs = np.array([op.outputs[0] for op in ops], np.int32)
            split.builtinOptionsType = schema.BuiltinOptions.SplitOptions
            split.builtinOptions = schema.SplitOptionsT()
            split.builtinOptions.numSplits = len(ops)
            fused_at[members[0]] = [new, split]
            drop.update(members[1:])
            groups_done.append((names, int(blob.size)))
        _splice(sg, si, fused_at, drop, op_names)
    return groups_done


def _splice(sg, si: int, replace_at: dict, drop: set, op_names: dict) -> None:
    """sg's operators with op i replaced by the list replace_at[i] and the ops in drop removed,
    in order.  The ops that go leave op_names too: a new op must not find a name under a reused
    id()."""
    if not replace_at and not drop:
        return
    for oi in (*replace_at, *drop):
        op_names.pop((si, id(sg.operators[oi])), None)
    new_ops = []
    for oi, op in enumerate(sg.operators):
        if oi in replace_at:
            new_ops.extend(replace_at[oi])
        elif oi not in drop:
            new_ops.append(op)
    sg.operators = new_ops


_UNPACK = 88


def _unfold_step_bias(schema, model_obj, custom_code: int, op_names: dict) -> dict:
    """Ops of one layer whose blobs differ only in a bias (an unrolled LSTM's input kernel: the
    converter folds the gate bias into the first step's FULLY_CONNECTED, where h_0 = 0 leaves
    nothing to add it to, and adds it after the other steps' sum) share the blob without it: a
    biased op writes its product to a new tensor and a builtin ADD of the bias follows.  The
    file then holds the kernel once, not twice (a 1000-frame lstm-ctc-xs-w4 file: 445 KB), and
    every step's op reads one blob, so _batch_unpacked_rows can join them.  The sum is the one
    the op's own epilogue makes (product, then + bias, each rounded once).  Only ops without a
    fused activation.  Returns {layer name: bytes of the blob kept}."""
    kept = {}
    for si, sg in enumerate(model_obj.subgraphs):
        blobs_of: dict[str, dict[int, object]] = {}
        for op in sg.operators:
            name = op_names.get((si, id(op)))
            if op.opcodeIndex == custom_code and len(op.inputs) == 2 and name is not None:
                t = int(op.inputs[1])
                if t not in blobs_of.setdefault(name, {}):
                    blobs_of[name][t] = op_blob.read(_array(model_obj, sg.tensors[t]))
        plain_for = {}  # biased blob tensor -> (the same blob without bias, its bias)
        for name, blobs in blobs_of.items():
            plain = [t for t, b in blobs.items() if not b.params[2] & FLAG_BIAS]
            for t, b in blobs.items():
                if not b.params[2] & FLAG_BIAS or b.params[1] != ACT_NONE:
                    continue
                for u in plain:
                    c = blobs[u]
                    unbiased = b.params.copy()
                    unbiased[2] &= ~FLAG_BIAS
                    same = (np.array_equal(c.header, b.header) and c.lead_dims == b.lead_dims
                            and np.array_equal(c.params, unbiased)
                            and all(c.sections[k] == b.sections[k] for k in ("data", "scales", "zero_points")))
                    if same:
                        plain_for[t] = (u, np.frombuffer(b.sections["bias"], np.float32), name)
                        kept[name] = int(_array(model_obj, sg.tensors[u]).size)
                        break
        if not plain_for:
            continue
        replace_at, names = {}, {}
        for oi, op in enumerate(sg.operators):
            if op.opcodeIndex != custom_code or len(op.inputs) != 2 or int(op.inputs[1]) not in plain_for:
                continue
            plain, bias, name = plain_for[int(op.inputs[1])]
            out = int(op.outputs[0])
            product = _add_activation_tensor(schema, sg, f"{name}/tfq_product{oi}",
                                             [int(d) for d in sg.tensors[out].shape])
            op.inputs = np.array([op.inputs[0], plain], np.int32)
            op.outputs = np.array([product], np.int32)
            add = schema.OperatorT()
            add.opcodeIndex = _opcode(schema, model_obj, _ADD)
            bias_t = _add_tensor(schema, model_obj, sg, f"{name}/tfq_bias{oi}", bias.copy(), _FLOAT32)
            add.inputs, add.outputs = np.array([product, bias_t], np.int32), np.array([out], np.int32)
            add.builtinOptionsType, add.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
            replace_at[oi], names[oi] = [op, add], name
        _splice(sg, si, replace_at, set(), op_names)
        for oi, ops in replace_at.items():  # the op object stays: it keeps its name
            op_names[(si, id(ops[0]))] = names[oi]
    return kept


def _batch_unpacked_rows(schema, model_obj, custom_code: int, op_names: dict) -> dict:
    """An UNPACK along axis 0 of a tensor X [T, ..., K] each of whose T outputs is read only by
    a plain TFQ_FULLY_CONNECTED, all of one blob (an unrolled LSTM's input kernel: one op per
    step, ``x_t @ kernel``), becomes one op over X and an UNPACK of its output [T, ..., N] into
    the T ops' outputs, where the UNPACK was (X is ready there, and every reader of an output
    came after it).  One call over T rows instead of T calls of one: the float-activation
    path decodes the 4- or 2-bit weights once per call, not once per row, and LiteRT's cost
    per custom op is paid once.  Each row is still multiplied on its own (the same weights, its
    own per-row quantization on the int8 path), so the outputs equal the separate calls' within
    float rounding (at 8 rows the float path sums each row in one FMA chain, at one row in two).
    The bundled lstm-ctc-xs-w4 over 128 frames, against Keras: 5.7e-6 batched; one op per step
    the same except one frame at 2.5e-3, where its CTC head's int8 input rounding flipped.
    Returns [(layer name, T)] per op made."""
    batched = []
    for si, sg in enumerate(model_obj.subgraphs):
        _, readers, graph_outputs = _graph_links(sg)
        replace_at, drop = {}, set()
        for ui, unpack in enumerate(sg.operators):
            opts = unpack.builtinOptions
            if _builtin(model_obj, unpack) != _UNPACK or opts is None or getattr(opts, "axis", 0) != 0:
                continue
            x = int(unpack.inputs[0])
            x_shape = [int(d) for d in sg.tensors[x].shape]
            rows = [int(t) for t in unpack.outputs]
            if len(x_shape) < 2 or len(rows) != x_shape[0] or len(rows) < 2:
                continue
            fcs = []
            for t in rows:
                readers_of_t = readers.get(t, set())
                if len(readers_of_t) != 1 or t in graph_outputs:
                    break
                fi = next(iter(readers_of_t))
                fc = sg.operators[fi]
                if not _plain_fc(model_obj, sg, si, fc, custom_code, op_names) or int(fc.inputs[0]) != t:
                    break
                fcs.append(fi)
            if len(fcs) != len(rows) or len({int(sg.operators[f].inputs[1]) for f in fcs}) != 1:
                continue
            ops = [sg.operators[f] for f in fcs]
            out_shapes = {tuple(int(d) for d in sg.tensors[op.outputs[0]].shape) for op in ops}
            if len(out_shapes) != 1 or list(next(iter(out_shapes)))[:-1] != x_shape[1:-1]:
                continue
            name = op_names[(si, id(ops[0]))]
            n = next(iter(out_shapes))[-1]
            y = _add_activation_tensor(schema, sg, f"{name}/tfq_batched", x_shape[:-1] + [n])
            fc = schema.OperatorT()
            fc.opcodeIndex = custom_code
            fc.inputs = np.array([x, ops[0].inputs[1]], np.int32)
            fc.outputs = np.array([y], np.int32)
            op_names[(si, id(fc))] = name
            # the UNPACK itself (same axis and count) now splits the op's output into theirs
            unpack.inputs = np.array([y], np.int32)
            unpack.outputs = np.array([op.outputs[0] for op in ops], np.int32)
            replace_at[ui] = [fc, unpack]
            drop.update(fcs)
            batched.append((name, len(rows)))
        _splice(sg, si, replace_at, drop, op_names)
    return batched


_LOGISTIC, _MUL = 14, 18


def _swish_before(model_obj, sg, links, swish: int, reader: int):
    """(pre, logistic op, mul op) where tensor ``swish`` is the converter's swish of ``pre``
    (MUL(pre, LOGISTIC(pre)), no fused activation) read only by op ``reader``, pre only by the
    two ops and the sigmoid only by the MUL, none of them a graph output; else None."""
    producer, readers, graph_outputs = links
    mi = producer.get(swish)
    if mi is None or _builtin(model_obj, sg.operators[mi]) != _MUL or len(sg.operators[mi].inputs) != 2:
        return None
    mul = sg.operators[mi]
    if mul.builtinOptions is not None and getattr(mul.builtinOptions, "fusedActivationFunction", 0):
        return None
    a, b = (int(t) for t in mul.inputs)
    for pre, sig in ((a, b), (b, a)):
        li = producer.get(sig)
        if li is None or _builtin(model_obj, sg.operators[li]) != _LOGISTIC or \
                int(sg.operators[li].inputs[0]) != pre:
            continue
        if readers.get(pre) != {li, mi} or readers.get(sig) != {mi} or \
                readers.get(swish) != {reader} or {pre, sig, swish} & graph_outputs:
            return None
        return pre, li, mi
    return None


def _plain_fc(model_obj, sg, si, op, custom_code: int, op_names: dict) -> bool:
    """A TFQ_FULLY_CONNECTED of ours with x and one blob, not flattening, not static (the op
    takes a static scale on one layer only: it is not chained or batched)."""
    return (op.opcodeIndex == custom_code and len(op.inputs) == 2 and (si, id(op)) in op_names and
            not op_blob.read(_array(model_obj, sg.tensors[op.inputs[1]])).params[2]
            & (FLAG_FLATTEN | FLAG_STATIC_ACT))


def _chain_after_swish(model_obj, custom_code: int, op_names: dict, chain_with) -> list:
    """What both chaining passes share: for each plain TFQ_FULLY_CONNECTED that reads a swish
    (_swish_before), chain_with(si, sg, links, pre, op, drop) gives (the ops to drop besides the
    swish's, the op's new inputs, its new opcode index or None, the names chained) or None; the
    op is rewired and the dropped ops removed, subgraph by subgraph.  Returns the names."""
    chained = []
    for si, sg in enumerate(model_obj.subgraphs):
        links = _graph_links(sg)
        drop, rewired = set(), {}
        for bi, op in enumerate(sg.operators):
            if bi in drop or not _plain_fc(model_obj, sg, si, op, custom_code, op_names):
                continue
            found = _swish_before(model_obj, sg, links, int(op.inputs[0]), bi)
            chain = None if found is None else chain_with(si, sg, links, found[0], op, drop)
            if chain is None:
                continue
            extra, inputs, opcode, names = chain
            rewired[bi] = (inputs, opcode)
            drop.update((*extra, found[1], found[2]))
            chained.append(names)
        for bi, (inputs, opcode) in rewired.items():
            sg.operators[bi].inputs = inputs
            if opcode is not None:
                sg.operators[bi].opcodeIndex = opcode
        _splice(sg, si, {}, drop, op_names)
    return chained


def _swish_blob(schema, model_obj, sg, shared: dict, op, name: str):
    """A constant tensor for op's blob with activation TFQ_ACT_SWISH, or None when op's blob
    has an activation already."""
    array = _array(model_obj, sg.tensors[op.inputs[1]])
    params = op_blob.read(array).params.copy()
    if params[1] != ACT_NONE:
        return None
    params[1] = ACT_SWISH
    blob = op_blob.with_params(array, params)
    return _shared_blob(schema, model_obj, sg, shared, f"{name}/tfq_blob", blob)


def _fuse_feed_forward(schema, model_obj, custom_code: int, op_names: dict, shared: dict) -> list:
    """Chain a TFQ_FULLY_CONNECTED, the swish after it (the converter's LOGISTIC and MUL) and
    the TFQ_FULLY_CONNECTED that reads the swish into one op with three inputs: x, the first
    layer's blob (its activation now TFQ_ACT_SWISH) and the second's (litert_op.h).  Each op
    call costs about 1 us in LiteRT besides the kernel, and the swish ran as its own XNNPACK
    partition; a feed-forward block is now one call.  Only where nothing else reads the first
    layer's output or the swish, neither layer flattens and the first has no activation.  The
    swish is then the op's own (x / (1 + e^-x) in float32, a few ulp from XNNPACK's): the same
    numbers to float rounding, not to the bit.  Returns [(first layer, second layer)]."""
    def chain_with(si, sg, links, pre, second, drop):
        ai = links[0].get(pre)
        if ai is None or ai in drop or \
                not _plain_fc(model_obj, sg, si, first := sg.operators[ai], custom_code, op_names):
            return None
        names = (op_names[(si, id(first))], op_names[(si, id(second))])
        blob = _swish_blob(schema, model_obj, sg, shared, first, names[0])
        if blob is None:
            return None
        return (ai,), np.array([first.inputs[0], blob, second.inputs[1]], np.int32), None, names
    return _chain_after_swish(model_obj, custom_code, op_names, chain_with)


def _fuse_depthwise_pointwise(schema, model_obj, dw_code: int, custom_code: int, dw_names: dict,
                              op_names: dict, shared: dict) -> list:
    """Chain a TFQ_DEPTHWISE_CONV_1D, the reshape [B, H, W, C] -> [B, H * W, C] and swish after
    it and the TFQ_FULLY_CONNECTED that reads the swish (a Conformer convolution module's
    depthwise and second pointwise layers) into one TFQ_DEPTHWISE_CONV_1D with three inputs: x,
    the depthwise blob (its activation now TFQ_ACT_SWISH) and the pointwise blob (litert_op.h).
    One LiteRT call and one XNNPACK partition fewer per module; as in _fuse_feed_forward the
    swish is the op's own, and only where nothing else reads what the chain hides.  Returns
    [(depthwise key, pointwise layer)]."""
    def chain_with(si, sg, links, pre, pw, drop):
        producer, readers, graph_outputs = links
        ri = producer.get(pre)
        if ri is None or ri in drop or _builtin(model_obj, reshape := sg.operators[ri]) != _RESHAPE:
            return None
        y4 = int(reshape.inputs[0])
        di = producer.get(y4)
        if di is None or di in drop or (dw := sg.operators[di]).opcodeIndex != dw_code or \
                len(dw.inputs) != 2 or (si, id(dw)) not in dw_names or \
                readers.get(y4) != {ri} or y4 in graph_outputs:
            return None
        s4, s3 = sg.tensors[y4].shape, sg.tensors[pre].shape
        if s4 is None or s3 is None or len(s4) != 4 or \
                [int(d) for d in s3] != [int(s4[0]), int(s4[1]) * int(s4[2]), int(s4[3])]:
            return None
        names = (dw_names[(si, id(dw))], op_names[(si, id(pw))])
        blob = _swish_blob(schema, model_obj, sg, shared, dw, _layer_of(names[0]))
        if blob is None:
            return None
        return (di, ri), np.array([dw.inputs[0], blob, pw.inputs[1]], np.int32), dw_code, names
    return _chain_after_swish(model_obj, custom_code, op_names, chain_with)


def _channel_factors(expected: np.ndarray, taps: np.ndarray) -> np.ndarray | None:
    """Per-channel a with taps == expected * a up to float rounding (the converter folds a
    BatchNorm after a depthwise convolution into its filter and bias, like DESIGN.md warns),
    or None.  Channels whose expected taps are all zero get a = 1 (their taps must be zero)."""
    num = np.sum(expected.astype(np.float64) * taps, axis=0)
    den = np.sum(expected.astype(np.float64) ** 2, axis=0)
    a = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    err = np.abs(expected * a - taps)
    tol = 4 * np.finfo(np.float32).eps * np.maximum(np.abs(taps), np.finfo(np.float32).tiny)
    return a.astype(np.float32) if np.all(err <= tol) else None


def _match_depthwise(model_obj, depthwise) -> list:
    """[(subgraph, op index, key, per-channel factors or None)] for every DEPTHWISE_CONV_2D whose
    constant [1, 1, taps, C] filter is a quantized DepthwiseConv1D's dequantized taps: bit for
    bit, or (an op whose tensors name the layer) times a per-channel factor, a BatchNorm the
    converter folded in.  Raises naming the layer if one has no such op."""
    expected = {key: np.ascontiguousarray(qw.dequantize(), np.float32) for key, qw in depthwise.items()}
    matches, seen = [], set()
    for si, sg in enumerate(model_obj.subgraphs):
        for oi, op in enumerate(sg.operators):
            if _builtin(model_obj, op) != _DEPTHWISE_CONV_2D or len(op.inputs) < 2:
                continue
            wt = sg.tensors[op.inputs[1]]
            w = _array(model_obj, wt) if wt.type == _FLOAT32 else None
            if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[1] != 1:
                continue
            taps = np.ascontiguousarray(w.reshape(w.shape[2], w.shape[3]))
            text = _names(sg, op)
            names = [k for k, e in expected.items() if _bit_equal(e, taps)]
            if len(names) > 1:
                names = [k for k in names if f"/{_layer_of(k)}/" in text]
            factors = None
            if not names:
                for k, e in expected.items():
                    if e.shape == taps.shape and f"/{_layer_of(k)}/" in text:
                        factors = _channel_factors(e, taps)
                        if factors is not None:
                            names = [k]
                            break
            if len(names) == 1:
                matches.append((si, oi, names[0], factors))
                seen.add(names[0])
    for key in depthwise:
        if key not in seen:
            raise LoweringError(f"layer {_layer_of(key)!r}: no DEPTHWISE_CONV_2D op of the converted "
                                "model carries its dequantized taps as a [1, 1, taps, C] filter (bit "
                                "for bit, or times a folded per-channel factor)")
    return matches


def _replace_depthwise(schema, model_obj, si, oi, key, qw: QuantizedWeight, factors, layer_index: int,
                       custom_code: int, shared: dict) -> dict:
    """DEPTHWISE_CONV_2D -> TFQ_DEPTHWISE_CONV_1D (litert_op.h) with the packed taps.  A folded
    per-channel factor goes into float32 scales (s * a, one rounding where the converter's
    filter had two: equal within float rounding, not bit for bit); the op's bias is the
    converter's (folded) bias."""
    sg = model_obj.subgraphs[si]
    op = sg.operators[oi]
    o = op.builtinOptions
    name = _layer_of(key)
    taps, channels = qw.shape
    x_t, y_t = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
    act = o.fusedActivationFunction
    if act not in _ACTIVATIONS:
        raise LoweringError(f"layer {name!r}: fused activation {act} has no TFQ equivalent")
    if (x_t.shape is None or len(x_t.shape) != 4 or int(x_t.shape[3]) != channels
            or (int(x_t.shape[1]) != 1 and (o.strideH != 1 or o.dilationHFactor != 1))  # H = 1: moot
            or o.depthMultiplier not in (0, 1)
            or y_t.shape is None or len(y_t.shape) != 4):
        raise LoweringError(f"layer {name!r}: DEPTHWISE_CONV_2D with input {list(x_t.shape)}, stride "
                            f"{o.strideH}x{o.strideW}, dilation {o.dilationHFactor}x{o.dilationWFactor}, "
                            f"multiplier {o.depthMultiplier}: only 1-D depthwise convolutions are packed")
    width, stride, dil = int(x_t.shape[2]), int(o.strideW), int(o.dilationWFactor)
    span = dil * (taps - 1) + 1
    if o.padding == schema.Padding.VALID:
        pad_l = pad_r = 0
    else:  # SAME, as TFLite computes it
        out_w = -(-width // stride)
        total = max((out_w - 1) * stride + span - width, 0)
        pad_l, pad_r = total // 2, total - total // 2
    out_w = (width + pad_l + pad_r - span) // stride + 1
    if [int(d) for d in y_t.shape] != [int(x_t.shape[0]), int(x_t.shape[1]), out_w, channels]:
        raise LoweringError(f"layer {name!r}: DEPTHWISE_CONV_2D output {list(y_t.shape)} is not the "
                            f"[B, H, {out_w}, {channels}] its geometry gives")
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = _array(model_obj, sg.tensors[op.inputs[2]])
        if bias is None or bias.shape != (channels,):
            raise LoweringError(f"layer {name!r}: DEPTHWISE_CONV_2D bias is not a constant float [C]")
    spec = qw.spec
    scales, scale_dtype = qw.scales.astype(np.float32), np.dtype(spec.scale_dtype)
    if factors is not None:
        scales, scale_dtype = (scales * factors[None, :]).astype(np.float32), np.dtype(np.float32)
    p = packing.dense_rows(packing.pack_weights(qw.q.astype(np.int16), spec.bits, spec.symmetric,
                                                spec.group_length(taps), scales, qw.zero_points,
                                                scale_dtype=scale_dtype))
    params = [DW_PARAMS_VERSION, _ACTIVATIONS[act], FLAG_BIAS if bias is not None else 0,
              layer_index, stride, dil, pad_l, pad_r]
    blob = op_blob.build(p, params, bias, (out_w,))
    new = schema.OperatorT()
    new.opcodeIndex = custom_code
    new.inputs = np.array([op.inputs[0], _shared_blob(schema, model_obj, sg, shared, f"{name}/tfq_blob", blob)],
                          np.int32)
    new.outputs = np.array(op.outputs[:1], np.int32)
    sg.operators[oi] = new
    return {"bits": spec.bits, "symmetric": spec.symmetric, "group_size": spec.group_length(taps),
            "k": taps, "n": channels, "scale_dtype": str(scale_dtype), "op": DW_OP_NAME,
            "folded_channel_factors": factors is not None,
            "activation": _ACTIVATIONS[act], "float_activations": True, "activation_mode": "none",
            "bytes": int(blob.size),
            "float_bytes": 4 * taps * channels}


# The ops PatchDense's im2col converts to (im2col.py): crop, pad, the (position, phase) reshape,
# one slice and reshape per tap, the concatenation.
_CONCATENATION, _PAD, _RESHAPE, _STRIDED_SLICE = 2, 34, 22, 45
_IM2COL_OPS = {_CONCATENATION, _PAD, _RESHAPE, _STRIDED_SLICE, _SLICE}


def _is_constant(model_obj, tensor) -> bool:
    data = model_obj.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _in_layer_scope(name, layer: str) -> bool:
    text = name.decode() if isinstance(name, bytes) else str(name)
    return any(part.startswith(f"{layer}/") or f"/{layer}/" in part for part in text.split(";"))


def _graph_links(sg) -> tuple[dict, dict, set]:
    """A subgraph's wiring: tensor -> index of the op that writes it, tensor -> set of the ops
    that read it, and the subgraph's output tensors."""
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    consumers: dict = {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), set()).add(i)
    return producer, consumers, {int(t) for t in (sg.outputs if sg.outputs is not None else [])}


def _fuse_im2col(schema, model_obj, geometry: Mapping[str, tuple], fc_code: int, conv_code_of) -> list:
    """Every TFQ_FULLY_CONNECTED of a convolution (geometry: layer -> (kh, kw, sh, sw)) whose
    input is computed, only for it, by the im2col ops of its layer's scope from one tensor X
    [B, H, W, C] becomes TFQ_CONV_2D on X, and those ops go: the op gathers the same patches
    itself (copies, so the output is the same bit for bit).  A graph of another shape is left
    as it is.  conv_code_of(): the custom opcode (created on first use).  Returns the layers."""
    fused = []
    for sg in model_obj.subgraphs:
        producer, consumers, outputs = _graph_links(sg)
        drop = set()
        for oi, op in enumerate(sg.operators):
            if op.opcodeIndex != fc_code:
                continue
            blob_name = sg.tensors[op.inputs[1]].name
            layer = (blob_name.decode() if isinstance(blob_name, bytes) else blob_name).rsplit("/", 1)[0]
            if layer not in geometry:
                continue
            kh, kw, sh, sw = geometry[layer]
            region, boundary, frontier = set(), set(), [int(op.inputs[0])]
            while frontier:
                t = frontier.pop()
                p = producer.get(t)
                if p is not None and p not in region and _builtin(model_obj, sg.operators[p]) in _IM2COL_OPS \
                        and not model_obj.operatorCodes[sg.operators[p].opcodeIndex].customCode \
                        and _in_layer_scope(sg.tensors[sg.operators[p].outputs[0]].name, layer):
                    region.add(p)
                    frontier += [int(i) for i in sg.operators[p].inputs
                                 if i >= 0 and not _is_constant(model_obj, sg.tensors[i])]
                elif p not in region:
                    boundary.add(t)
            if not region or len(boundary) != 1:
                continue
            x_index = boundary.pop()
            x = sg.tensors[x_index]
            y = sg.tensors[op.outputs[0]]
            blob = _array(model_obj, sg.tensors[op.inputs[1]])
            parts = op_blob.read(blob)
            header, params = parts.header, parts.params
            k = int(header[4])
            xs, ys = [int(d) for d in x.shape], [int(d) for d in y.shape]
            ok = len(xs) == 4 and xs[3] * kh * kw == k and xs[1] >= kh and xs[2] >= kw \
                and not params[2] & FLAG_FLATTEN
            want = [xs[0], (xs[1] - kh) // sh + 1, (xs[2] - kw) // sw + 1, ys[-1]] if ok else []
            # The op's rows are (b, oh, ow); the converter may leave them as [Ho, 1, Wo, N] and
            # reshape afterwards: the same order, so only RESHAPE consumers may see a new shape.
            ok = ok and (ys == want or ([d for d in ys[:-1] if d != 1] == [d for d in want[:-1] if d != 1]
                                        and all(_builtin(model_obj, sg.operators[c]) == _RESHAPE
                                                for c in consumers.get(int(op.outputs[0]), ()))))
            # every tensor the region computes is read only inside it (or by the op)
            inner = {int(t) for p in region for t in sg.operators[p].outputs}
            ok = ok and not inner & outputs and all(
                consumers.get(t, set()) <= region | {oi} for t in inner)
            if not ok:
                continue
            conv_params = [CONV_PARAMS_VERSION, params[1], params[2], params[3], kh, kw, sh, sw]
            op.inputs = np.array([
                x_index,
                _add_tensor(schema, model_obj, sg, f"{layer}/tfq_blob", op_blob.with_params(blob, conv_params), _UINT8),
                # the geometry as dims for GetOutputLayouts; its kh*kw*sh*sw bytes are not read
                _add_tensor(schema, model_obj, sg, f"{layer}/tfq_conv_geometry",
                            np.zeros((kh, kw, sh, sw), np.uint8), _UINT8)], np.int32)
            op.opcodeIndex = conv_code_of()
            y.shape = np.array(want, np.int32)
            if y.shapeSignature is not None:
                y.shapeSignature = np.array(want, np.int32)
            drop |= region
            fused.append(layer)
        sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    return fused


def _custom_opcode(schema, model_obj, name: str, version: int) -> int:
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = _CUSTOM
    code.customCode = name.encode()
    code.version = version
    model_obj.operatorCodes.append(code)
    return len(model_obj.operatorCodes) - 1


_CONV_2D, _DEQUANTIZE, _INT8 = 3, 6, 9


def _store_int8(schema, model_obj, weights) -> list:
    """8-bit kernels that stay builtin (the packed format takes 4 and 2 bits) stored as int8:
    each float constant weight of a FULLY_CONNECTED, CONV_2D or DEPTHWISE_CONV_2D that is a
    kernel's dequantized values bit for bit becomes the output of a builtin DEQUANTIZE of an int8
    tensor with the kernel's per-channel scales and zero points (asymmetric [0, 255] integers
    and zero points shifted by -128: q - zp is unchanged; a power-of-two factor the converter
    folded in goes into the scales, exactly).  DEQUANTIZE computes (q - zp) * s in float32 as
    QuantizedWeight.dequantize does, and LiteRT runs it once on a constant input, so the file
    computes what the float one did at a quarter of the weight bytes.  Sub-channel
    groups have no builtin form; those kernels stay float.  weights: QuantizedWeight per kernel.
    Returns, per kernel, the int8 bytes and scales stored, or None where it stays float."""
    by_size = {}  # element count -> [(kernel index, its dequantized values, [K, N])]
    for i, qw in enumerate(weights):
        if qw.spec.bits == 8 and qw.spec.num_groups(qw.shape[0]) == 1:
            by_size.setdefault(qw.q.size, []).append((i, qw.dequantize()))
    stored: list = [None] * len(weights)
    if not by_size:
        return stored

    def match(w: np.ndarray, axis: str):
        """(kernel index, factor) of a kernel whose dequantized values, in the op's layout (FC
        [N, K] and CONV_2D [O, H, W, I]: channels first; DEPTHWISE_CONV_2D [1, H, W, C]: last),
        times a power of two (the converter folds the macaron 1/2 into the weights) are w."""
        n = w.shape[0] if axis == "first" else w.shape[-1]
        for i, deq in by_size.get(w.size, []):
            if deq.shape[1] != n:
                continue
            f = _power_of_two_factor((deq.T if axis == "first" else deq).reshape(w.shape), w)
            scales = weights[i].scales.astype(np.float32)
            if f is not None and np.array_equal(scales * np.float32(f) / np.float32(f), scales):
                return i, np.float32(f)  # (no scale times f leaves the normal range)
        return None
    axis_of = {_FULLY_CONNECTED: "first", _CONV_2D: "first", _DEPTHWISE_CONV_2D: "last"}
    for sg in model_obj.subgraphs:
        done, made = {}, {}  # float weight tensor / (kernel, shape) -> the dequantized tensor
        dequantize_ops = []
        for op in sg.operators:
            axis = axis_of.get(_builtin(model_obj, op))
            if axis is None or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            wi = int(op.inputs[1])
            if wi in done:
                op.inputs[1] = done[wi]
                continue
            t = sg.tensors[wi]
            w = _array(model_obj, t) if t.type == _FLOAT32 else None
            hit = match(w, axis) if w is not None and w.ndim >= 2 else None
            if hit is None:
                continue
            i, factor = hit
            qw = weights[i]
            n = qw.shape[1]
            dim = 0 if axis == "first" else len(t.shape) - 1
            shape = [int(d) for d in t.shape]
            if (i, tuple(shape), float(factor)) in made:  # another tensor with the same values (e.g. per step)
                done[wi] = op.inputs[1] = made[(i, tuple(shape), float(factor))]
                continue
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            q = qw.q.T if axis == "first" else qw.q
            zp = np.zeros(n, np.int64)
            if qw.zero_points is not None:
                q = q.astype(np.int16) - 128
                zp = qw.zero_points.reshape(-1).astype(np.int64) - 128
            q = np.ascontiguousarray(q).astype(np.int8).reshape(shape)
            ti = _add_tensor(schema, model_obj, sg, f"{name}/tfq_int8", q, _INT8)
            qp = schema.QuantizationParametersT()
            qp.scale = np.broadcast_to(qw.scales.astype(np.float32).reshape(-1) * factor, (n,)).copy()
            qp.zeroPoint = np.broadcast_to(zp, (n,)).copy()
            qp.quantizedDimension = dim
            sg.tensors[ti].quantization = qp
            out = _add_activation_tensor(schema, sg, f"{name}/tfq_dequantized", shape)
            deq = schema.OperatorT()
            deq.opcodeIndex = _opcode(schema, model_obj, _DEQUANTIZE)
            deq.inputs, deq.outputs = np.array([ti], np.int32), np.array([out], np.int32)
            dequantize_ops.append(deq)
            done[wi] = made[(i, tuple(shape), float(factor))] = op.inputs[1] = out
            stored[i] = (stored[i] or 0) + q.size + 4 * n + (8 * n if qw.zero_points is not None else 0)
        sg.operators = dequantize_ops + list(sg.operators)  # before every reader
    return stored


def _garbage_collect(model_obj) -> None:
    """Remove tensors no op, subgraph input/output or signature uses, then unused buffers."""
    used_buffers = {0}
    for md in model_obj.metadata or []:
        used_buffers.add(md.buffer)
    for si, sg in enumerate(model_obj.subgraphs):
        used = set(int(i) for i in list(sg.inputs) + list(sg.outputs) if i >= 0)
        for op in sg.operators:
            used.update(int(i) for i in list(op.inputs) + list(op.outputs) if i >= 0)
            if op.intermediates is not None:
                used.update(int(i) for i in op.intermediates if i >= 0)
        for sig in model_obj.signatureDefs or []:
            if sig.subgraphIndex == si:
                used.update(int(t.tensorIndex) for t in list(sig.inputs or []) + list(sig.outputs or []))
        order = sorted(used)
        remap = {old: new for new, old in enumerate(order)}
        sg.tensors = [sg.tensors[i] for i in order]
        fix = lambda arr: np.array([remap[int(i)] if i >= 0 else -1 for i in arr], np.int32)
        sg.inputs, sg.outputs = fix(sg.inputs), fix(sg.outputs)
        for op in sg.operators:
            op.inputs, op.outputs = fix(op.inputs), fix(op.outputs)
            if op.intermediates is not None:
                op.intermediates = fix(op.intermediates)
        for sig in model_obj.signatureDefs or []:
            if sig.subgraphIndex == si:
                for t in list(sig.inputs or []) + list(sig.outputs or []):
                    t.tensorIndex = remap[int(t.tensorIndex)]
        used_buffers.update(int(t.buffer) for t in sg.tensors)
    order = sorted(used_buffers)
    remap = {old: new for new, old in enumerate(order)}
    model_obj.buffers = [model_obj.buffers[i] for i in order]
    for sg in model_obj.subgraphs:
        for t in sg.tensors:
            t.buffer = remap[int(t.buffer)]
    for md in model_obj.metadata or []:
        md.buffer = remap[int(md.buffer)]


def _serialize_external(model_obj) -> bytes:
    """The flatbuffer followed by every tensor buffer at a 64-byte aligned file offset."""
    from tensorflow.lite.tools import flatbuffer_utils
    metadata_buffers = {int(md.buffer) for md in model_obj.metadata or []}
    payload = []
    for i, b in enumerate(model_obj.buffers):
        if i in metadata_buffers or b.data is None or len(b.data) == 0:
            continue
        payload.append((b, np.asarray(b.data, np.uint8).tobytes()))
        b.data = None
        b.offset, b.size = 2, len(payload[-1][1])  # provisional values, so the fields are present
    head = flatbuffer_utils.convert_object_to_bytearray(model_obj)
    for _ in range(3):  # offsets are fixed-size fields: the length settles at once
        pos = -(-len(head) // ALIGN) * ALIGN
        for b, raw in payload:
            b.offset = pos
            pos = -(-(pos + len(raw)) // ALIGN) * ALIGN
        again = flatbuffer_utils.convert_object_to_bytearray(model_obj)
        if len(again) == len(head):
            head = again
            break
        head = again
    else:
        raise LoweringError("flatbuffer size did not settle while placing external buffers")
    out = bytearray(head)
    for b, raw in payload:
        assert b.offset >= len(out)
        out += b"\0" * (b.offset - len(out))
        out += raw
    return bytes(out)


def file_layout(data: bytes) -> dict:
    """Where the bytes of a lowered file go: the flatbuffer (op and tensor tables, names,
    metadata: everything before the first constant buffer placed behind it), the 64-byte
    alignment padding between buffers, the framing inside the TFQ ops' blobs (descriptor words,
    padding between and after their sections: op_blob.py) and the constant data itself.  Files
    whose buffers sit inside the flatbuffer (the converter's own) count as all flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    m = schema.Model.GetRootAs(data, 0)
    ext = {i: (m.Buffers(i).Offset(), m.Buffers(i).Size()) for i in range(m.BuffersLength())
           if m.Buffers(i).Offset() > 1}
    ours = {i for i in range(m.OperatorCodesLength())
            if (m.OperatorCodes(i).CustomCode() or b"").decode() in (OP_NAME, DW_OP_NAME, CONV_OP_NAME)}
    blobs = set()
    for si in range(m.SubgraphsLength()):
        sg = m.Subgraphs(si)
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            if op.OpcodeIndex() in ours and op.InputsLength() > 1:
                blobs.add(sg.Tensors(op.Inputs(1)).Buffer())
    framing = 0
    for b in blobs & set(ext):
        off, size = ext[b]
        words = np.frombuffer(data, np.int32, op_blob.WORDS, off)
        lengths = words[op_blob.SECTIONS_WORD + 1:op_blob.SECTIONS_WORD + 2 * len(op_blob.SECTIONS):2]
        framing += size - int(lengths.sum())
    head = min((o for o, _ in ext.values()), default=len(data))
    constant = sum(n for _, n in ext.values())
    return {"flatbuffer_bytes": head, "alignment_bytes": len(data) - head - constant,
            "blob_framing_bytes": framing, "constant_bytes": constant - framing}


def check_output_path(path) -> Path:
    """`path` as a Path, or a LoweringError before any work if a file cannot be written there
    (a directory, or a folder that does not exist: tfq_asr.errors.check_output_file)."""
    from ..errors import UserError, check_output_file
    try:
        return check_output_file("output", path)
    except UserError as err:
        raise LoweringError(str(err)) from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the
    whole new one, and a failure leaves no partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a model file is as readable as any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


ACTIVATION_MODES = {"dynamic": False, "none": True}  # mode -> TFQ_OP_FLAG_FLOAT_ACT


def _float_activation_keys(quantized, activations, float_activations) -> set:
    modes = {}
    for key, mode in dict(activations or {}).items():
        modes[key] = mode
    for key in float_activations or ():
        if modes.get(key, "none") != "none":
            raise LoweringError(f"layer {key!r}: activation mode {modes[key]!r} in `activations` but "
                                "listed in `float_activations`")
        modes[key] = "none"
    for key, mode in modes.items():
        if key not in quantized:
            raise LoweringError(f"layer {key!r}: an activation mode was given for a layer that is not "
                                f"among the quantized layers {sorted(quantized)}")
        if mode not in ACTIVATION_MODES:
            raise LoweringError(f"layer {key!r}: activation mode {mode!r}; {OP_NAME} computes "
                                f"{sorted(ACTIVATION_MODES)} ('dynamic': int8 per row at run time, "
                                "'none': float activations)")
    return {key for key, mode in modes.items() if ACTIVATION_MODES[mode]}


def lower_to_tflite(float_model, quantized: Mapping[str, QuantizedWeight], out_path, *,
                    input_shape=None, extra_metadata: dict | None = None,
                    activations: Mapping[str, str] | None = None, float_activations=(),
                    depthwise: Mapping[str, QuantizedWeight] | None = None,
                    int8_weights=(), static_scales: Mapping[str, float] | None = None,
                    fuse_im2col: bool = True, fuse_shared_input: bool = True,
                    fuse_feed_forward: bool = True, fuse_depthwise_pointwise: bool = True,
                    batch_unpacked_rows: bool = True, progress=None) -> dict:
    """Write ``out_path`` (.tflite) with every layer of ``quantized`` as TFQ_FULLY_CONNECTED.

    float_model: a tf_keras model (not modified); quantized: key -> QuantizedWeight of the
    kernel, keys are Dense layer names or "layer/role" for LSTM kernels ("lstm0/kernel",
    "lstm0/recurrent_kernel"; a rolled LSTM is unrolled), bits the packed format takes
    (packing.SUPPORTED_BITS); input_shape: the fixed input shape, batch included, e.g.
    (1, 400, 80); required when the model's input has unknown dimensions.
    extra_metadata: JSON-serialisable facts stored with the layer names (e.g. streaming state).
    activations: key -> activation mode of its ops, as QuantizedLayer.activation says:
    "dynamic" (the default for keys not given: int8 per row at run time, tfq_linear_q8) or
    "none" (float activations, TFQ_OP_FLAG_FLOAT_ACT, tfq_linear_f32: weight-only Dense layers
    and LSTM kernels, whose quantized Keras layers multiply float inputs); "static" is refused.
    float_activations: shorthand, keys whose mode is "none".
    depthwise: "layer/depthwise_kernel" -> QuantizedWeight [taps, C] of DepthwiseConv1D layers:
    each becomes TFQ_DEPTHWISE_CONV_1D (packed taps, float activations, as its Keras layer).
    static_scales: key -> the activation scale (calibrated max|x| / 127) of layers with a static
    input range: their ops quantize every row with it (TFQ_OP_FLAG_STATIC_ACT, the int8 path);
    not with float activations, and not for LSTM kernels.
    int8_weights: QuantizedWeights of 8-bit kernels (per channel or per tensor) that stay builtin:
    stored as int8 with a DEQUANTIZE (_store_int8); the report's "int8_stored" gives, per
    kernel, the bytes stored or None where no weight was its dequantized values.
    fuse_im2col: a quantized VALID Conv2D becomes TFQ_CONV_2D, which gathers its patches
    itself, instead of im2col ops feeding TFQ_FULLY_CONNECTED (the same numbers bit for bit;
    False keeps the im2col ops, for comparison).
    fuse_shared_input: layers that read the same tensor with the same packed format and N
    (attention's q, k, v) become one TFQ_FULLY_CONNECTED and a SPLIT (_fuse_shared_input; the
    same numbers bit for bit); their report entries name the others in "shares_op_with".
    fuse_feed_forward: a quantized layer, swish and the quantized layer after it (a Conformer
    feed-forward block) become one TFQ_FULLY_CONNECTED with both blobs (_fuse_feed_forward; the
    swish is the op's own, a few ulp from XNNPACK's); the report entries name the other layer in
    "chained_with".
    fuse_depthwise_pointwise: a quantized depthwise layer, swish and the quantized layer after
    it (a Conformer convolution module) become one TFQ_DEPTHWISE_CONV_1D with both blobs
    (_fuse_depthwise_pointwise; the op's swish); both report entries name the other in
    "chained_with".
    batch_unpacked_rows: the T ops of an unrolled LSTM's input kernel, one per step, become one
    op over the T rows and an UNPACK (_batch_unpacked_rows; equal within float rounding); the
    report entry's "ops" counts the one op and "batched_rows" says T.
    progress: called with the name of each stage as it starts (conversions of large models
    take minutes; tools/convert.py shows them).
    Returns a report: {"path", "input_shape", "file_bytes", "layers": {name: {"bits", "bytes",
    "ops", "activation_mode", ...}}, "float_ops": number of FULLY_CONNECTED ops left in float}.
    """
    import tf_keras as keras
    out_path = check_output_path(out_path)
    float_keys = _float_activation_keys(quantized, activations, float_activations)
    static_scales = dict(static_scales or {})
    for key, scale in static_scales.items():
        if key not in quantized or key in float_keys or "/" in key:
            raise LoweringError(f"layer {key!r}: a static scale for a layer that is not a quantized Dense "
                                "layer on the int8 path")
        if not (np.isfinite(scale) and scale > 0):
            raise LoweringError(f"layer {key!r}: static activation scale {scale}: must be finite and positive")
    shape = _input_shape(float_model, input_shape)
    stage = progress or (lambda name: None)
    stage("float graph with the dequantized weights")
    clone = _clone_with_dequantized(float_model, quantized)
    schema = _schema()
    from tensorflow.lite.tools import flatbuffer_utils
    stage("TFLite converter")
    model_obj = flatbuffer_utils.read_model_from_bytearray(bytearray(_convert(clone, shape)))
    stage(f"packing {len(quantized) + len(depthwise or {})} quantized kernels into custom ops"
          if quantized or depthwise else "writing the file")
    matches = _match_layers(model_obj, quantized)
    dw_matches = _match_depthwise(model_obj, dict(depthwise or {}))
    custom_code = _custom_opcode(schema, model_obj, OP_NAME, OP_VERSION) if matches else -1
    dw_code = _custom_opcode(schema, model_obj, DW_OP_NAME, DW_OP_VERSION) if dw_matches else -1
    layer_names = list(dict.fromkeys([m[2] for m in matches] + [_layer_of(m[2]) for m in dw_matches]))
    layers, shared, op_names = {}, {}, {}
    for si, oi, name, factor in matches:
        info = _replace(schema, model_obj, si, oi, name, quantized[name], factor,
                        layer_names.index(name), custom_code, name in float_keys, shared,
                        static_scales.get(name))
        op_names[(si, id(model_obj.subgraphs[si].operators[oi]))] = name
        if name in layers:
            layers[name]["ops"] += 1
        else:
            layers[name] = dict(info, ops=1)
    dw_names = {}
    for si, oi, key, factors in dw_matches:
        info = _replace_depthwise(schema, model_obj, si, oi, key, depthwise[key], factors,
                                  layer_names.index(_layer_of(key)), dw_code, shared)
        dw_names[(si, id(model_obj.subgraphs[si].operators[oi]))] = key
        if key in layers:
            layers[key]["ops"] += 1
        else:
            layers[key] = dict(info, ops=1)
    if matches:
        for name, blob_bytes in _unfold_step_bias(schema, model_obj, custom_code, op_names).items():
            layers[name]["bytes"] = blob_bytes
    if batch_unpacked_rows and matches:
        for name, rows in _batch_unpacked_rows(schema, model_obj, custom_code, op_names):
            layers[name].update(ops=layers[name]["ops"] - rows + 1, batched_rows=rows)
    fused = _fuse_shared_input(schema, model_obj, custom_code, op_names, layer_names, shared) \
        if fuse_shared_input and matches else []
    for names, blob_bytes in fused:  # the joined blob's bytes, shared by each layer's own
        own = [layers[n]["bytes"] for n in names]
        share = [blob_bytes * b // sum(own) for b in own]
        share[0] += blob_bytes - sum(share)
        for name, b in zip(names, share):
            layers[name].update(bytes=int(b), shares_op_with=[n for n in names if n != name])
    conv_code = []
    def conv_code_of():
        if not conv_code:
            conv_code.append(_custom_opcode(schema, model_obj, CONV_OP_NAME, CONV_OP_VERSION))
        return conv_code[0]
    by_name = _layers_by_name(float_model)
    geometry = {n: tuple(layer.kernel_size) + tuple(layer.strides) for n in layers
                if isinstance(layer := by_name.get(n), keras.layers.Conv2D)}
    conv_layers = _fuse_im2col(schema, model_obj, geometry, custom_code, conv_code_of) if fuse_im2col else []
    for name in conv_layers:
        layers[name]["op"] = CONV_OP_NAME
    if fuse_feed_forward and matches:
        for first, second in _fuse_feed_forward(schema, model_obj, custom_code, op_names, shared):
            layers[first]["chained_with"], layers[second]["chained_with"] = second, first
    if fuse_depthwise_pointwise and matches and dw_matches:
        for key, name in _fuse_depthwise_pointwise(schema, model_obj, dw_code, custom_code, dw_names,
                                                   op_names, shared):
            layers[key]["chained_with"], layers[name]["chained_with"] = name, key
    split = _split_long_depthwise(schema, model_obj)
    int8_bytes = _store_int8(schema, model_obj, list(int8_weights or []))
    _garbage_collect(model_obj)
    md_buf = schema.BufferT()
    md_json = {**(extra_metadata or {}), **keras_io_order(float_model), "layers": layer_names, "op": OP_NAME,
               **({"depthwise_op": DW_OP_NAME,
                   "depthwise_layers": list(dict.fromkeys(_layer_of(m[2]) for m in dw_matches))}
                  if dw_matches else {}),
               **({"conv_op": CONV_OP_NAME, "conv_layers": conv_layers} if conv_layers else {})}
    md_buf.data = np.frombuffer(json.dumps(md_json).encode(), np.uint8)
    model_obj.buffers.append(md_buf)
    md = schema.MetadataT()
    md.name = METADATA_NAME.encode()
    md.buffer = len(model_obj.buffers) - 1
    model_obj.metadata = list(model_obj.metadata or []) + [md]
    float_ops = sum(_builtin(model_obj, op) == _FULLY_CONNECTED
                    for sg in model_obj.subgraphs for op in sg.operators)
    data = _serialize_external(model_obj)
    write_atomically(out_path, data)
    return {"path": str(out_path), "input_shape": list(shape[0]), "file_bytes": len(data),
            "layers": layers, "float_ops": float_ops, "depthwise_split": split, "int8_stored": int8_bytes}
