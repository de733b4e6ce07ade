"""What a user would ship without this toolkit, written from the same Keras model so sizes,
accuracy and speed compare in one run:

  fp32         the float model, builtin ops (XNNPACK)
  litert-int8  the TFLite converter's dynamic-range quantization (Optimize.DEFAULT): int8
               per-channel weights of fully connected and conv layers, activations quantized
               on the fly by the runtime
  litert-int4  ai-edge-quantizer 0.10, int4 per-channel dynamic weights of FULLY_CONNECTED ops
               (its int4 covers nothing else; convolutions stay float here)
  litert-int4-b32  the same with blocks of 32 inputs: ai-edge-quantizer refuses any layer whose
               K is not a multiple of 32 (conformer-ctc-xs has K = 144), reported as an error

The files carry the same `tfq_asr` metadata as our own exports, so a streaming baseline runs
through `tfq_asr.streaming.Recognizer` like any other model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .lowering import METADATA_NAME, _convert, _input_shape, write_atomically

BASELINES = ("fp32", "litert-int8", "litert-int4", "litert-int4-b32")


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


def _litert_int4(float_tflite: bytes, blockwise: bool) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    rm = recipe_manager.RecipeManager()
    gran = qtyping.QuantGranularity.BLOCKWISE_32 if blockwise else qtyping.QuantGranularity.CHANNELWISE
    rm.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, num_bits=4,
                          granularity=gran)
    q = quantizer.Quantizer(bytearray(float_tflite), rm.get_quantization_recipe())
    try:
        return bytes(q.quantize(enable_progress_report=False).quantized_model)
    except ValueError as err:
        raise ValueError(f"ai-edge-quantizer int4{' blockwise 32' if blockwise else ''} failed: {err}") from None


def baseline_bytes(keras_model, kind: str, input_shape=None) -> bytes:
    """A .tflite of a float tf_keras model under one of BASELINES."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    shapes = _input_shape(keras_model, input_shape)
    if kind == "litert-int8":
        return _convert(keras_model, shapes, dynamic_range_int8=True)
    data = _convert(keras_model, shapes)
    return _litert_int4(data, kind.endswith("-b32")) if kind.startswith("litert-int4") else data


def write_baseline(keras_model, path, kind: str, *, input_shape=None, extra_metadata=None) -> dict:
    data = baseline_bytes(keras_model, kind, input_shape)
    if extra_metadata:
        data = _with_metadata(data, extra_metadata)
    write_atomically(Path(path), data)
    return {"path": str(path), "baseline": kind, "size_bytes": len(data), "layers": {}, "float_kernels": []}


def export_streaming_baseline(model, path, kind: str, *, lstm_steps: int = 8) -> dict:
    """The streaming step model of a float AsrModel as a LiteRT-native baseline file."""
    from ..models.streaming import build_step_model, transfer_weights
    from .export import streaming_metadata
    if model.quantization:
        raise ValueError(f"model {model.name} is a quantized checkpoint; baselines start from the float model")
    if not model.config.streaming:
        raise ValueError(f"model {model.name}: not a streaming configuration (chunk = 0)")
    step = build_step_model(model.config, lstm_steps)
    transfer_weights(model.keras_model, step)
    meta = streaming_metadata(model.config, model.name, step, kind, lstm_steps)
    return write_baseline(step, path, kind, extra_metadata=meta)
