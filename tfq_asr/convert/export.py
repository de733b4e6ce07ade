"""From a (quantized) Keras model to a .tflite: which layers become packed custom ops, which stay
float, and the streaming export of our recognizers.

`convert(q, path)` lowers every quantized Dense layer and LSTM kernel whose bits the packed
format takes to the custom op: int8-dynamic inputs on the kernels' int8 path, float inputs
(weight-only Dense, LSTM kernels, VALID Conv2D as im2col) on their float path; DepthwiseConv1D
taps to TFQ_DEPTHWISE_CONV_1D. A Dense layer with a calibrated (static) input range quantizes
its input with that fixed scale (TFQ_OP_FLAG_STATIC_ACT); other static layers take the float
path, dropping their activation rounding (the report marks them "static_range_dropped"). Every other quantized kernel (2-D depthwise, bits
the format lacks, such as w8) stays a builtin op with float activations: 8-bit ones with one
scale per channel stored as int8 with a DEQUANTIZE (lowering._store_int8), the rest as float.
The report says which is which, and why."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import packing
from ..text import BLANK, VOCAB
from .lowering import check_output_path, lower_to_tflite

STREAMING_FORMAT = 1


def lowering_plan(q, float_convs: bool = False):
    """(float twin, {key: QuantizedWeight} to pack, keys using float activations, [kernels kept
    builtin: layer, role, bits, why, weight], {"layer/depthwise_kernel": QuantizedWeight} of
    DepthwiseConv1D layers to pack). Keys are Dense and Conv2D layer names and "lstmN/kernel" /
    "lstmN/recurrent_kernel".  A VALID Conv2D is packed as im2col + the packed op on the
    float-activation path (what its quantized layer computes); float_convs keeps Conv2D
    kernels as builtin float CONV_2D instead (a larger file; XNNPACK's float convolution is
    1.5-2x faster than our float-activation kernel at these shapes)."""
    from ..quant.apply import float_twin, quantized_layers, wrappers
    from .im2col import why_not_patch_dense
    if not wrappers(q):
        return q, {}, [], [], {}
    twin = float_twin(q)
    packed, float_act, kept, depthwise = {}, [], [], {}
    for ql in quantized_layers(q):
        why = None
        key = ql.layer if ql.layer_type in ("Dense", "Conv2D") else f"{ql.layer}/{ql.role}"
        if ql.layer_type == "Conv2D":
            why = why_not_patch_dense(twin.get_layer(ql.layer)) if not float_convs else \
                "kept float on request (float convolutions: larger file, XNNPACK speed)"
            if not why and ql.weight.spec.bits not in packing.SUPPORTED_BITS:
                why = f"{ql.weight.spec.bits}-bit weights are not in the packed format"
        elif ql.layer_type == "DepthwiseConv1D":
            if ql.weight.spec.bits not in packing.SUPPORTED_BITS:
                why = f"{ql.weight.spec.bits}-bit weights are not in the packed format"
            else:
                depthwise[key] = ql.weight
                continue
        elif ql.layer_type not in ("Dense", "LSTM"):
            why = f"{ql.layer_type} kernels run as builtin float ops"
        elif ql.weight.spec.bits not in packing.SUPPORTED_BITS:
            why = f"{ql.weight.spec.bits}-bit weights are not in the packed format"
        if why:
            kept.append({"layer": ql.layer, "role": ql.role, "bits": ql.weight.spec.bits, "why": why,
                         "weight": ql.weight})
            continue
        packed[key] = ql.weight
        # weight-only Dense, LSTM kernels, convolutions: the float path.  A static range on
        # anything but a Dense layer too: the op takes a fixed scale on its one-layer int8 path
        # only, and float activations are what a builtin op with these weights would compute
        # (convert() marks them in the report).
        if ql.activation == "none" or (ql.activation == "static" and ql.layer_type != "Dense"):
            float_act.append(key)
    return twin, packed, float_act, kept, depthwise


def static_scales(q) -> dict:
    """{key of lowering_plan: activation scale} of the layers with calibrated (static) input
    ranges, the scale as their Keras layers compute it (max|x| / 127 in float32, 1 for 0)."""
    from ..quant.apply import wrappers
    from ..quant.numerics import _static_scale
    from .lowering import LoweringError
    scales = {}
    for w in wrappers(q):  # the ranges alone: no need to quantize the weights again
        if w.quantize_config.activation != "static":
            continue
        input_max = float(w.input_max.numpy())
        if not (np.isfinite(input_max) and input_max >= 0):
            raise LoweringError(f"layer {w.layer.name!r}: static activation range not calibrated (max |x| "
                                f"{input_max}): quantize with calibration= (tools/convert.py --calibration)")
        scales[w.layer.name] = float(_static_scale(input_max))  # Dense and Conv2D keys are layer names
    return scales


def convert(q, path, *, input_shape=None, extra_metadata=None, float_convs: bool = False, progress=None) -> dict:
    """Write `q` (a Keras model from `tfq_asr.quantize`, or any float tf_keras model) to `path`.
    Returns the lowering report plus `size_bytes` and `float_kernels` (quantized kernels stored
    as float, with the reason). `extra_metadata`: a dict, or a function of the float twin that
    is converted (its input and output names are the file's) returning one. `progress`: called
    with each stage's name as it starts."""
    from ..quant.apply import require_tf_keras_model
    require_tf_keras_model(q, "convert()")
    check_output_path(path)  # before minutes of work
    if progress:
        progress("integer weights of the quantized layers")
    twin, packed, float_act, kept, depthwise = lowering_plan(q, float_convs)
    if callable(extra_metadata):
        extra_metadata = extra_metadata(twin)
    scales = static_scales(q)
    statics = {k: s for k, s in scales.items() if k in packed and k not in float_act}
    report = lower_to_tflite(twin, packed, path, input_shape=input_shape, extra_metadata=extra_metadata,
                             float_activations=float_act, depthwise=depthwise, static_scales=statics,
                             int8_weights=[k.pop("weight") for k in kept], progress=progress)
    report["size_bytes"] = Path(path).stat().st_size
    for k, stored in zip(kept, report.pop("int8_stored")):
        if stored is not None:
            k.update(stored="int8", stored_bytes=stored)
    for key in scales:
        if key in report["layers"] and key not in statics:
            report["layers"][key]["static_range_dropped"] = True
    report["float_kernels"] = kept
    return report


def export_streaming(model, path, *, policy=None, lstm_steps: int = 8, float_convs: bool = False,
                     progress=None) -> dict:
    """Write the streaming step model of an AsrModel (float, or a quantized checkpoint whose
    policy is reused) to `path`: one chunk per call, every state an input and an output.
    `policy` quantizes a float model on the way (weights only, no calibration). `progress`:
    called with each stage's name as it starts."""
    if progress:
        progress("streaming step model")
    step, policy_name = streaming_step_model(model, policy=policy, lstm_steps=lstm_steps)
    return convert(step, path, float_convs=float_convs, progress=progress,
                   extra_metadata=lambda twin: streaming_metadata(model.config, model.name, twin, policy_name,
                                                                   lstm_steps))


def streaming_step_model(model, *, policy=None, lstm_steps: int = 8):
    """(the Keras step model export_streaming converts, its policy name): quantized like the
    AsrModel (or with `policy`), weights transferred.  Running it chunk by chunk is what the
    streaming file computes (tools/exactness.py compares the two)."""
    from ..models.streaming import build_step_model, transfer_weights
    from ..quant.apply import as_policy, policy_of, quantize
    cfg = model.config
    if not cfg.streaming:
        raise ValueError(f"model {model.name}: not a streaming configuration (chunk = 0); "
                         "export it offline with a fixed input length instead")
    source = model.keras_model
    if policy is not None:
        if model.quantization:
            raise ValueError(f"model {model.name} is already quantized; pass no policy")
        source = quantize(source, policy)
    step_policy = policy_of(source) or (as_policy(model.quantization["policy"]) if model.quantization else None)
    step = build_step_model(cfg, lstm_steps, source=source)
    if step_policy is not None:
        step = quantize(step, step_policy)
    transfer_weights(source, step)
    return step, (step_policy.name if step_policy else "fp32")


def streaming_metadata(cfg, model_name: str, converted, policy_name: str, lstm_steps: int = 8) -> dict:
    """What the Recognizer needs to run a step model file: chunk size and which output feeds
    which state input (names as in `converted`, the Keras model that was converted)."""
    from ..models.streaming import chunk_frames, step_states
    outputs = list(converted.output_names)  # Keras order: logits, then the states in order
    return {"streaming": {"format": STREAMING_FORMAT, "chunk_frames": chunk_frames(cfg, lstm_steps),
                          "features": converted.input_names[0], "logits": outputs[0],
                          "states": [{"input": s.name, "output": o, "shape": list(s.shape)}
                                     for s, o in zip(step_states(cfg), outputs[1:])],
                          "num_classes": cfg.num_classes, "model": model_name, "policy": policy_name,
                          "vocabulary": list(VOCAB), "blank": BLANK, "frontend": frontend_metadata()}}


def frontend_metadata() -> dict:
    """The log-mel recipe of `tfq_asr.frontend`, so that a runtime outside Python (the C
    streaming core, the Android app) computes the same features from the file alone."""
    from .. import frontend
    return {"sample_rate": 16000, "n_mels": frontend.N_MELS, "win": frontend.WIN, "hop": frontend.HOP,
            "n_fft": frontend.N_FFT, "fmin": frontend.FMIN, "fmax": frontend.FMAX,
            "log_floor": frontend.LOG_FLOOR, "window": "hann (periodic)",
            "mel": "slaney scale, slaney area normalisation (librosa.filters.mel defaults)",
            "pad_value": "log(log_floor)", "center": False}


def offline_metadata(cfg, model_name: str, converted, policy_name: str, input_frames: int) -> dict:
    """What `tfq_asr.streaming.TfliteTranscriber` needs to run an offline (fixed-length) file of
    a recognizer: the input length, the feature and logits names, and the time subsampling
    (output frames = ceil(input frames / subsampling) for both model families)."""
    from ..models import output_length
    sub = next(s for s in (1, 2, 4, 8, 16) if all(output_length(n, cfg) == -(-n // s) for n in (1, 7, 100, 1000)))
    return {"offline": {"format": STREAMING_FORMAT, "input_frames": int(input_frames),
                        "features": converted.input_names[0], "logits": converted.output_names[0],
                        "subsampling": sub, "num_classes": cfg.num_classes, "model": model_name,
                        "policy": policy_name}}
