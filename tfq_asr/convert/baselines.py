"""What a user would ship without this toolkit, written from the same Keras model so sizes,
accuracy and speed compare in one run (`tools/convert.py --policy BASELINE`):

  fp32            the float model, builtin ops (XNNPACK): our lowering with nothing quantized
                  (constant buffers outside the flatbuffer, 64-byte aligned, like our own files)
  litert-int8     the TFLite converter's dynamic-range quantization (Optimize.DEFAULT): int8
                  per-channel weights of fully connected and convolution layers (the converter
                  leaves small ones float), activations quantized per run by the runtime
  litert-int4     ai-edge-quantizer 0.10: int4 weights, blocks of 32 inputs (BLOCKWISE_32),
                  dynamic int8 activations, FULLY_CONNECTED ops only
  litert-int4-pc  the same with one scale per output channel (CHANNELWISE)

What ai-edge-quantizer's int4 cannot do, and what the files therefore hold:
  * Blockwise needs K (the input size of the layer) divisible by the block: conformer-ctc-xs
    has d_model 144 = 4.5 x 32, so every attention projection and first feed-forward layer
    would be refused. `litert-int4` quantizes those layers per channel instead and says so per
    layer in the report ("int4 per channel: K=144 not a multiple of 32").
  * Only FULLY_CONNECTED: convolutions (subsampling, depthwise) stay float; its convolution
    quantization is per channel only, never blockwise or sub-channel.
  * 2-bit: blockwise int2 fails at run time in LiteRT 2.3.0's XNNPACK (DESIGN.md), so there is
    no `litert-int2` baseline; only per-channel int2 would run.
  * No sub-channel scales in the converter's int8 (Optimize.DEFAULT keeps one per channel).

Every file has a fixed input shape (one per model input: streaming step models have the chunk
and every state as inputs) and, for streaming step models, the same `tfq_asr` metadata as our
own exports (`export.streaming_metadata`), so `tfq_asr.streaming.Recognizer` runs a baseline
like any other model. Files are written atomically; the Keras model is not modified.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .lowering import METADATA_NAME, _convert, _input_shape, check_output_path, keras_io_order, write_atomically

BASELINES = ("fp32", "litert-int8", "litert-int4", "litert-int4-pc")
BLOCK = 32

# TFLite schema numbers
_CONV_2D, _DEPTHWISE_CONV_2D, _DEQUANTIZE, _FULLY_CONNECTED, _CUSTOM = 3, 4, 6, 9, 32
_WEIGHT_OPS = {_CONV_2D: "CONV_2D", _DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D", _FULLY_CONNECTED: "FULLY_CONNECTED"}
_BITS = {0: 32, 1: 16, 9: 8, 3: 8, 17: 4, 19: 2, 20: 4, 18: 16}


def _with_metadata(tflite: bytes, meta: dict) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps({"layers": [], **meta}).encode(), np.uint8)
    model.buffers.append(buf)
    md = schema.MetadataT()
    md.name = METADATA_NAME.encode()
    md.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [md]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _fully_connected_scopes(float_tflite: bytes) -> list[tuple[str, int]]:
    """(ai-edge-quantizer scope, K) of every FULLY_CONNECTED op with a constant weight."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fbu
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite))
    out = []
    for sg in model.subgraphs:
        for op in sg.operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode != _FULLY_CONNECTED or len(op.inputs) < 2:
                continue
            w = sg.tensors[op.inputs[1]]
            if len(w.shape) == 2:
                out.append((fbu.get_op_scope(op, sg.tensors), int(w.shape[1])))
    return out


def _litert_int4(float_tflite: bytes, blockwise: bool) -> tuple[bytes, dict]:
    """ai-edge-quantizer int4 dynamic weights of FULLY_CONNECTED ops; with `blockwise`, blocks
    of 32 where K allows and per channel elsewhere. Returns the file and {scope: why} of the
    ops that fell back to per channel."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    rm = recipe_manager.RecipeManager()
    fc = qtyping.TFLOperationName.FULLY_CONNECTED
    rm.add_dynamic_config(regex=".*", operation_name=fc, num_bits=4,
                          granularity=qtyping.QuantGranularity.CHANNELWISE)
    fallback = {}
    if blockwise:
        # The latest matching scope wins: exact scopes of the ops whose K takes blocks of 32.
        for scope, k in _fully_connected_scopes(float_tflite):
            if k % BLOCK:
                fallback[scope] = f"int4 per channel: K={k} not a multiple of {BLOCK}"
            else:
                rm.add_dynamic_config(regex="^" + re.escape(scope) + "$", operation_name=fc, num_bits=4,
                                      granularity=qtyping.QuantGranularity.BLOCKWISE_32)
    q = quantizer.Quantizer(bytearray(float_tflite), rm.get_quantization_recipe())
    try:
        return bytes(q.quantize(enable_progress_report=False).quantized_model), fallback
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"ai-edge-quantizer int4{' blockwise 32' if blockwise else ''} failed: {err}") from None


def baseline_bytes(keras_model, kind: str, input_shape=None) -> bytes:
    """A .tflite of a float tf_keras model under one of BASELINES."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    return _baseline(keras_model, kind, _input_shape(keras_model, input_shape))[0]


def _baseline(keras_model, kind: str, shapes) -> tuple[bytes, dict]:
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    if kind == "litert-int8":
        return _convert(keras_model, shapes, dynamic_range_int8=True), {}
    data = _convert(keras_model, shapes)
    if kind.startswith("litert-int4"):
        return _litert_int4(data, blockwise=kind == "litert-int4")
    return data, {}


def _layer_of(names: list[str], layer_names) -> str | None:
    """The Keras layer an op computes, from its tensor names ('model/block0_ff1_dense1/...')."""
    for text in names:
        for layer in sorted(layer_names, key=len, reverse=True):
            if f"/{layer}/" in text or text.startswith(f"{layer}/"):
                return layer
    return None


def weight_inventory(tflite: bytes, layer_names=(), fallback: dict | None = None) -> list[dict]:
    """One row per FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op of a builtin .tflite whose
    weight is a constant (directly or through DEQUANTIZE): layer, op, bits, granularity, bytes
    of the weight with its scales, and how it is stored. `fallback`: {scope: note} from
    _litert_int4. Ops of one layer (an unrolled LSTM) are merged when they share the weight."""
    from ai_edge_litert import schema_py_generated as schema
    m = schema.Model.GetRootAs(tflite, 0)
    codes = [max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())]
    rows, seen = [], {}
    for si in range(m.SubgraphsLength()):
        sg = m.Subgraphs(si)
        producer = {}
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            for j in range(op.OutputsLength()):
                producer[op.Outputs(j)] = op
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            code = codes[op.OpcodeIndex()]
            if code not in _WEIGHT_OPS or op.InputsLength() < 2:
                continue
            wi = op.Inputs(1)
            src = producer.get(wi)
            if src is not None and codes[src.OpcodeIndex()] == _DEQUANTIZE:
                wi = src.Inputs(0)
            elif src is not None:
                continue  # a computed weight (e.g. attention scores): not a stored layer
            w = sg.Tensors(wi)
            buf = m.Buffers(w.Buffer())
            nbytes = int(buf.Size()) if buf.Offset() > 1 else int(buf.DataLength())
            if nbytes == 0:
                continue
            shape = [int(d) for d in w.ShapeAsNumpy()]
            out_names = [sg.Tensors(op.Outputs(j)).Name().decode() for j in range(op.OutputsLength())]
            scope = ";".join(out_names) + ";"
            key = (si, wi)
            layer = _layer_of(out_names + [w.Name().decode()], layer_names) or w.Name().decode()
            if key in seen:
                seen[key]["ops"] += 1
                continue
            bits = _BITS.get(w.Type(), 0)
            gran, scale_bytes = "float", 0
            q = w.Quantization()
            if q is not None and q.DetailsType() == 2:  # QuantizationDetails.BlockwiseQuantization
                bq = schema.BlockwiseQuantization()
                bq.Init(q.Details().Bytes, q.Details().Pos)
                st = sg.Tensors(bq.Scales())
                sb = m.Buffers(st.Buffer())
                scale_bytes = int(sb.Size()) if sb.Offset() > 1 else int(sb.DataLength())
                gran = f"block {bq.BlockSize()}"
            elif q is not None and q.ScaleLength():
                scale_bytes = 4 * q.ScaleLength() + (8 * q.ZeroPointLength() if bits < 8 else 0)
                gran = "per channel" if q.ScaleLength() > 1 else "per tensor"
            if bits >= 16:
                storage = f"float{bits} builtin"
            else:
                storage = f"int{bits} {gran} builtin"
                if fallback and scope in fallback:
                    storage = fallback[scope]
            row = {"layer": layer, "op": _WEIGHT_OPS[code], "shape": shape, "bits": bits,
                   "granularity": gran if bits < 16 else None, "bytes": nbytes + scale_bytes,
                   "float_bytes": 4 * int(np.prod(shape)), "storage": storage, "ops": 1}
            seen[key] = row
            rows.append(row)
    return rows


def write_baseline(keras_model, path, kind: str, *, input_shape=None, extra_metadata=None,
                   progress=None) -> dict:
    """Write `keras_model` (float tf_keras, any layers the converter takes) as baseline `kind`.
    Returns {"path", "baseline", "size_bytes", "input_shape", "weights": weight_inventory rows,
    "layers": {}, "float_kernels": []} (the last two: nothing is a TFQ op). `progress`: called
    with each stage's name as it starts."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    from ..quant.apply import require_tf_keras_model
    require_tf_keras_model(keras_model, "write_baseline()")
    path = check_output_path(path)
    shapes = _input_shape(keras_model, input_shape)
    meta = dict(extra_metadata or {})
    meta.setdefault("policy", kind)
    meta.update(keras_io_order(keras_model))
    fallback = {}
    if kind == "fp32":  # our lowering with nothing quantized: the same file layout as our exports
        from .lowering import lower_to_tflite
        lower_to_tflite(keras_model, {}, path, input_shape=shapes[0], extra_metadata=meta, progress=progress)
        data = Path(path).read_bytes()
    else:
        if progress:
            progress(f"TFLite converter ({kind})")
        data, fallback = _baseline(keras_model, kind, shapes)
        data = _with_metadata(data, meta)
        write_atomically(Path(path), data)
    layer_names = [layer.name for layer in keras_model.layers]
    return {"path": str(path), "baseline": kind, "size_bytes": len(data), "file_bytes": len(data),
            "input_shape": [list(s) for s in shapes], "layers": {}, "float_kernels": [],
            "weights": weight_inventory(data, layer_names, fallback)}


def export_streaming_baseline(model, path, kind: str, *, lstm_steps: int = 8, progress=None) -> dict:
    """The streaming step model of a float AsrModel as a LiteRT-native baseline file."""
    from ..models.streaming import build_step_model, transfer_weights
    from .export import streaming_metadata
    if model.quantization:
        raise ValueError(f"model {model.name} is a quantized checkpoint; baselines start from the float model")
    if not model.config.streaming:
        raise ValueError(f"model {model.name}: not a streaming configuration (chunk = 0)")
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    if progress:
        progress("streaming step model")
    step = build_step_model(model.config, lstm_steps, source=model.keras_model)
    transfer_weights(model.keras_model, step)
    meta = streaming_metadata(model.config, model.name, step, kind, lstm_steps)
    return write_baseline(step, path, kind, extra_metadata=meta, progress=progress)
