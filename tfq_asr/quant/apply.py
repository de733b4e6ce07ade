"""`quantize(model, policy)`: a tf_keras model -> the same model with every layer the policy
quantizes wrapped in a tfmot `QuantizeWrapperV2` (our configs), weights copied, clipping factors
computed; and the way back out: the integer weights each quantized layer computes with."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from ..errors import UserError
from .configs import (TfqQuantizeConfig, TfqQuantizeWrapper, custom_objects, default_activation, get_kernel,
                      matrix_shape, patch_conv, patch_inputs, weight_roles)
from .numerics import QuantizedWeight, quantize_weight
from .policy import Policy, from_name

# -convq8 leaves a convolution with fewer inputs per patch on float activations (the first one
# over 1-channel features: 9): the int8 kernels pad K to 32, so int8 would cost 3.5x the work
# there (measured 37 us against 15 us float for the xs subsampling's first convolution).
MIN_INT8_PATCH_INPUTS = 32


def require_tf_keras_model(model, who: str) -> None:
    """A UserError unless `model` is a tf_keras Model, naming what it is instead: a Keras 3
    model (`import keras`) is the usual mistake, and its class is also called Functional."""
    if isinstance(model, keras.Model):
        return
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    hint = ("; it is a Keras 3 model: build it with tf_keras (import tf_keras as keras, or "
            "tf.keras with TF_USE_LEGACY_KERAS=1), which tfmot requires"
            if type(model).__module__.startswith("keras") else "")
    raise UserError(f"{who} needs a tf_keras Model, got {kind}{hint}")


def as_policy(policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    try:
        return Policy.from_dict(policy) if isinstance(policy, dict) else from_name(str(policy))
    except ValueError as err:
        raise UserError(str(err)) from None


def _layer_specs(layer, policy: Policy) -> dict:
    """{role: spec or None} of a supported layer; checks each spec fits the kernel."""
    specs = {}
    for role in weight_roles(layer):
        spec = policy.spec_for(layer.name, role)
        if spec is not None:
            w = get_kernel(layer, role).numpy()
            if not np.all(np.isfinite(w)):
                raise UserError(f"layer {layer.name}: {role} contains NaN or Inf; cannot quantize it")
        specs[role] = spec
    return specs


def _explicit_rule_hits(policy: Policy, layer) -> list[str]:
    return [r.pattern for r in policy.rules if r.spec is not None and fnmatch.fnmatchcase(layer.name, r.pattern)]


def quantize(model, policy, calibration=None, *, data_aware_clipping: bool = True, progress: bool = False):
    """Return a new Keras model computing `model` quantized by `policy` (a Policy, a preset name
    such as "w4-sc64-f16", or a policy dict). The input model is not modified.

    calibration: None (weights only; dynamic int8 activations need nothing else), an iterable
    of model inputs (e.g. [T, 80] feature arrays), or "synthetic" (zero-shot: inputs generated
    from the model's own normalisation statistics, `zero_shot.synthesize`). Calibration sets the
    static activation ranges of a `-static` policy and, with data_aware_clipping, picks each
    Dense layer's clipping factors by the output error on the calibration activations."""
    policy = as_policy(policy)
    require_tf_keras_model(model, "quantize()")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise UserError(f"layer {layer.name}: nested models are not supported; flatten the model first")
        if not weight_roles(layer) and layer.weights and _explicit_rule_hits(policy, layer):
            raise UserError(f"layer {layer.name} ({type(layer).__name__}): no quantization config for this layer "
                            f"type, but policy rule(s) {_explicit_rule_hits(policy, layer)} select it "
                            f"(supported: Dense, Conv1D, Conv2D, DepthwiseConv1D, DepthwiseConv2D, LSTM)")
    plan = {}
    for layer in model.layers:
        specs = _layer_specs(layer, policy)
        if any(s is not None for s in specs.values()):
            activation = policy.activations if default_activation(layer) == "dynamic" else "none"
            if policy.conv_activations == "dynamic" and patch_conv(layer) and \
                    patch_inputs(layer) >= MIN_INT8_PATCH_INPUTS:
                activation = "dynamic"
            if policy.lstm_activations == "dynamic" and isinstance(layer, keras.layers.LSTM):
                activation = "dynamic"
            plan[layer.name] = TfqQuantizeConfig(specs, activation)

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        if layer.name in plan:
            return TfqQuantizeWrapper(new, plan[layer.name])
        return new

    with tfmot.quantization.keras.quantize_scope(custom_objects()):
        try:
            q = keras.models.clone_model(model, clone_function=clone)
        except ValueError as err:
            raise UserError(f"cannot clone the model for quantization: {err}") from None
    for layer in model.layers:
        target = q.get_layer(quantized_name(layer.name) if layer.name in plan else layer.name)
        copy_layer_weights(layer, target)
    for w in wrappers(q):
        try:
            w.init_clipping()
        except ValueError as err:
            raise UserError(str(err)) from None
    q._tfq_policy = policy  # noqa: SLF001  (read by reports and save_model)
    if calibration is not None:
        from .calibration import calibrate
        calibrate(q, model, calibration, data_aware_clipping=data_aware_clipping, progress=progress)
    return q


def _relative(weight_name: str) -> str:
    """'quant_block0_dense/kernel:0' -> 'kernel:0' (the name inside its layer)."""
    return weight_name.split("/", 1)[1] if "/" in weight_name else weight_name


def copy_layer_weights(src, dst) -> None:
    """Copy weights between a layer and its quantized wrapper (either direction) by name.
    (A wrapped layer no longer lists the kernels the wrapper replaced with fake-quant tensors,
    so its own get/set_weights cannot be used.)"""
    src_w = {_relative(w.name): w for w in src.weights}
    for w in dst.weights:
        name = _relative(w.name)
        if name in src_w:
            w.assign(src_w.pop(name))
    if src_w:
        raise UserError(f"layer {src.name}: weights {sorted(src_w)} have no counterpart in {dst.name}")


def quantized_name(layer_name: str) -> str:
    return f"quant_{layer_name}"


def wrappers(q) -> list[TfqQuantizeWrapper]:
    return [layer for layer in q.layers if isinstance(layer, TfqQuantizeWrapper)]


def policy_of(q) -> Policy | None:
    return getattr(q, "_tfq_policy", None)


def with_conv_activations(q, mode: str):
    """The quantized model `q` with the inputs of its VALID Conv2D layers in `mode` ("dynamic":
    int8 per patch, the -convq8 suffix; "none": float): a new model with the same integer
    weights, clipping factors and calibration; only those layers' activation quantization
    changes (post-training for them if q was trained the other way; measure the accuracy)."""
    return with_input_mode(q, "conv_activations", mode)


def with_lstm_activations(q, mode: str):
    """As `with_conv_activations`, for the LSTMs' x_t and h_{t-1} ("dynamic": int8 per step,
    the -lstmq8 suffix; "none": float)."""
    return with_input_mode(q, "lstm_activations", mode)


def with_input_mode(q, field: str, mode: str):
    """The quantized model `q` with the inputs of one kind of layer (`field`, a key of
    policy.INPUT_MODE_SUFFIXES) in `mode`; the two functions above name the kinds."""
    policy = policy_of(q)
    if policy is None:
        raise UserError(f"cannot set {field}: the model is not quantized")
    if mode == getattr(policy, field):
        return q
    new = quantize(_unwrapped_clone(q), policy.with_input_mode(field, mode))
    for layer in new.layers:
        if layer.weights:
            copy_layer_weights(q.get_layer(layer.name), layer)
    return new


@dataclass(frozen=True)
class QuantizedLayer:
    """What a lowering needs of one quantized kernel: the integers, the layer and its bias."""
    layer: str              # the original layer name
    role: str
    layer_type: str
    weight: QuantizedWeight
    bias: np.ndarray | None
    activation: str         # dynamic | static | none
    input_max: float | None


def quantized_layers(q) -> list[QuantizedLayer]:
    """The integer weights of every quantized kernel of `q`, exactly those its fake-quant
    computes with (same clipping factors)."""
    out = []
    for w in wrappers(q):
        layer, cfg = w.layer, w.quantize_config
        bias = getattr(layer, "bias", None)
        bias = None if bias is None or isinstance(layer, keras.layers.LSTM) else bias.numpy()
        input_max = float(w.input_max.numpy()) if cfg.activation == "static" else None
        for weight, quantizer, qvars in w._weight_vars:  # noqa: SLF001
            k, n = matrix_shape(layer, quantizer.role, weight.shape)
            qw = quantize_weight(np.reshape(weight.numpy(), (k, n)), quantizer.spec, alpha=qvars["alpha"].numpy())
            out.append(QuantizedLayer(layer.name, quantizer.role, type(layer).__name__, qw, bias,
                                      cfg.activation, input_max))
    return out


def _unwrapped_clone(q):
    """The quantized model's architecture with plain layers (new, unset weights)."""
    return keras.models.clone_model(
        q, clone_function=lambda layer: (layer.layer.__class__.from_config(layer.layer.get_config())
                                         if isinstance(layer, TfqQuantizeWrapper)
                                         else layer.__class__.from_config(layer.get_config())))


def float_twin(q):
    """A plain float Keras model computing with the quantized model's dequantized kernels
    (activations unquantized): what a float runtime would run, and what lowering converts."""
    twin = _unwrapped_clone(q)
    deq = {(ql.layer, ql.role): ql.weight.dequantize() for ql in quantized_layers(q)}
    for layer in q.layers:
        src = layer.layer if isinstance(layer, TfqQuantizeWrapper) else layer
        dst = twin.get_layer(src.name)
        wanted = {_relative(w.name) for w in dst.weights}
        for w in layer.weights:
            if _relative(w.name) in wanted:
                dst_w = next(d for d in dst.weights if _relative(d.name) == _relative(w.name))
                dst_w.assign(w)
        for role in weight_roles(dst):
            if (src.name, role) in deq:
                kernel = get_kernel(dst, role)
                kernel.assign(np.reshape(deq[(src.name, role)], kernel.shape))
    return twin
