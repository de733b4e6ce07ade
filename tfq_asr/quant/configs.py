"""tfmot quantizers and QuantizeConfigs for every quantizable layer of our recognizers (and of any
tf_keras model built from the same layer types).

What each supported layer computes once quantized (the "native" QAT graph is what the lowered
kernels compute, to float rounding):

  Dense                     int8 dynamic (or static) activations x fake-quant kernel [K, N]: the
                            TFQ fully connected kernel's int8 path.
  Conv1D / Conv2D           fake-quant kernel viewed as [kh*kw*cin, cout]; float activations.
  DepthwiseConv1D / 2D      fake-quant kernel viewed as [taps, channels]; float activations.
  LSTM                      fake-quant input kernel [in, 4u] and recurrent kernel [u, 4u], each
                            with its own spec (the LSTM literature quantizes them differently);
                            float activations by default, or (activation "dynamic", the -lstmq8
                            policy suffix) x_t and h_{t-1} quantized to int8 per step and row
                            before their products, as the kernels' int8 path computes them.

The weight quantizer keeps its clipping factors (from the float weights, `clip_factors`) as a
non-trainable weight of the wrapper, so they are saved with the model and stay fixed during QAT.
Layers no rule quantizes are left alone: no hidden 8-bit fake-quant anywhere.
"""
from __future__ import annotations

import types

import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from .numerics import (WeightQuantSpec, clip_factors, fake_quant_activation_dynamic_tf,
                       fake_quant_activation_static_tf, fake_quant_weight_tf)

QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
Quantizer = tfmot.quantization.keras.quantizers.Quantizer
QuantizeWrapperV2 = tfmot.quantization.keras.QuantizeWrapperV2

ACTIVATION_MODES = ("dynamic", "static", "none")


def weight_roles(layer) -> tuple[str, ...]:
    """Names of the quantizable kernels of a layer, () when the layer type has no config."""
    if isinstance(layer, keras.layers.LSTM):
        return ("kernel", "recurrent_kernel")
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return ("depthwise_kernel",)
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
        return ("kernel",)
    return ()


def default_activation(layer) -> str:
    """Dense layers run the int8 kernel; everything else keeps float activations."""
    return "dynamic" if isinstance(layer, keras.layers.Dense) else "none"


def patch_conv(layer) -> bool:
    """A Conv2D whose inputs can be quantized per patch: one that lowers to TFQ_CONV_2D (VALID,
    channels last, no dilation or groups, not depthwise; the lowering's own check)."""
    from ..convert.im2col import why_not_patch_dense
    return why_not_patch_dense(layer) is None


def patch_inputs(layer) -> int:
    """Inputs per patch of a Conv2D: kh * kw * input channels (the K of its matrix)."""
    return int(np.prod(layer.kernel.shape[:-1]))


def _patch_conv_call(self, inputs):
    """Conv2D.call over int8 patches: each output position's kh*kw*C inputs, in (i, j, channel)
    order (the kernel [kh, kw, C, N] read as [kh*kw*C, N]), quantize-dequantized per row as a
    Dense layer's inputs are, times the (fake-quantized) kernel."""
    kh, kw = self.kernel_size
    sh, sw = self.strides
    patches = tf.image.extract_patches(inputs, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1],
                                       rates=[1, 1, 1, 1], padding="VALID")
    y = tf.tensordot(fake_quant_activation_dynamic_tf(patches), tf.reshape(self.kernel, [-1, self.filters]),
                     [[3], [0]])
    if self.use_bias:
        y = tf.nn.bias_add(y, self.bias)
    return self.activation(y)


def _int8_lstm_cell_call(original):
    """LSTMCell.call with x_t and h_{t-1} quantize-dequantized to int8 per row (dynamic) first:
    in the cell h_{t-1} only feeds the recurrent product and x_t only the input product, so
    this is exactly int8 activations x fake-quant kernels, what the lowered ops compute."""
    def call(inputs, states, training=None):
        h_tm1, *rest = states
        return original(fake_quant_activation_dynamic_tf(inputs),
                        [fake_quant_activation_dynamic_tf(h_tm1), *rest], training=training)
    return call


def _owner(layer, role):
    return layer.cell if isinstance(layer, keras.layers.LSTM) else layer


def get_kernel(layer, role: str):
    return getattr(_owner(layer, role), role)


def as_matrix(w) -> tuple[int, int]:
    """[K, N] view of a kernel: the last axis is the output channels except for depthwise kernels,
    where channels x multiplier are the outputs and the taps the inputs."""
    shape = tuple(int(d) for d in w.shape)
    return int(np.prod(shape[:-1])), shape[-1]


def matrix_shape(layer, role: str, shape) -> tuple[int, int]:
    shape = tuple(int(d) for d in shape)
    if role == "depthwise_kernel":
        # DepthwiseConv1D [taps, c, m], DepthwiseConv2D [kh, kw, c, m]: K = taps, N = c * m
        return int(np.prod(shape[:-2])), shape[-2] * shape[-1]
    return int(np.prod(shape[:-1])), shape[-1]


class WeightFakeQuantizer(Quantizer):
    """Fake-quantizes one kernel per the numerics contract (straight-through gradient)."""

    def __init__(self, spec: WeightQuantSpec, role: str = "kernel"):
        self.spec = spec
        self.role = role

    def build(self, tensor_shape, name, layer):
        k, n = matrix_shape(None, self.role, tensor_shape)
        self.spec.group_length(k)  # validates the spec against K
        alpha = layer.add_weight(f"{name}_clip", shape=self.spec.alpha_shape(k, n),
                                 initializer=keras.initializers.Ones(), trainable=False)
        return {"alpha": alpha}

    def __call__(self, inputs, training, weights, **kwargs):
        shape = inputs.shape
        k, n = matrix_shape(None, self.role, shape)
        w = tf.reshape(inputs, [k, n])
        return tf.reshape(fake_quant_weight_tf(w, self.spec, alpha=weights["alpha"]), shape)

    def get_config(self):
        return {"spec": self.spec.to_dict(), "role": self.role}

    @classmethod
    def from_config(cls, config):
        return cls(WeightQuantSpec.from_dict(config["spec"]), config.get("role", "kernel"))

    def __eq__(self, other):
        return isinstance(other, WeightFakeQuantizer) and self.get_config() == other.get_config()


class TfqQuantizeConfig(QuantizeConfig):
    """Weight specs per kernel role (None: that kernel stays float) and the activation mode."""

    def __init__(self, specs: dict, activation: str = "none"):
        if activation not in ACTIVATION_MODES:
            raise ValueError(f"activation={activation!r}: expected one of {ACTIVATION_MODES}")
        self.specs = {r: (s if isinstance(s, WeightQuantSpec) or s is None else WeightQuantSpec.from_dict(s))
                      for r, s in specs.items()}
        self.activation = activation

    def get_weights_and_quantizers(self, layer):
        return [(get_kernel(layer, role), WeightFakeQuantizer(spec, role))
                for role, spec in self.specs.items() if spec is not None]

    def set_quantize_weights(self, layer, quantize_weights):
        roles = [r for r, s in self.specs.items() if s is not None]
        for role, w in zip(roles, quantize_weights):
            setattr(_owner(layer, role), role, w)

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"specs": {r: (None if s is None else s.to_dict()) for r, s in self.specs.items()},
                "activation": self.activation}

    @classmethod
    def from_config(cls, config):
        return cls(config["specs"], config.get("activation", "none"))


class TfqQuantizeWrapper(QuantizeWrapperV2):
    """tfmot's wrapper plus int8 quantization of the layer's input, which tfmot's wrapper does
    not do (its activation quantizers act on outputs): dynamic per row, or static with a
    calibrated range kept as the weight `input_max` (0 until calibrated = per-row dynamic is
    NOT substituted; an uncalibrated static layer refuses to run, see `check_calibrated`)."""

    def build(self, input_shape):
        super().build(input_shape)
        if self.quantize_config.activation == "static":
            self.input_max = self.add_weight("input_max", shape=(), initializer=keras.initializers.Constant(-1.0),
                                             trainable=False)

    # Plain Python branches on the policy only (tfmot's smart_cond handles `training`), so
    # Keras need not autograph-convert the call each time it builds a model: quantize() 1.7x faster.
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None, **kwargs):
        mode = self.quantize_config.activation
        if mode == "dynamic" and isinstance(self.layer, keras.layers.LSTM):
            return self._int8_lstm_call(inputs, training=training, **kwargs)
        if mode == "dynamic" and patch_conv(self.layer):
            # per patch, not per input row: the wrapped layer computes over quantized patches
            # for this call (tfmot calls layer.call after setting the fake-quantized kernel)
            self.layer.call = types.MethodType(_patch_conv_call, self.layer)
            try:
                return super().call(inputs, training=training, **kwargs)
            finally:
                del self.layer.call
        if mode == "dynamic":
            inputs = fake_quant_activation_dynamic_tf(inputs)
        elif mode == "static":
            tf.debugging.assert_non_negative(
                self.input_max, message=f"layer {self.layer.name}: static activation range not calibrated")
            inputs = fake_quant_activation_static_tf(inputs, self.input_max)
        return super().call(inputs, training=training, **kwargs)

    def _int8_lstm_call(self, inputs, training=None, **kwargs):
        # Per step, through the cell: the fused standard_lstm path (taken when the layer could
        # use cuDNN) never calls cell.call, so it is switched off for this call only.
        lstm, cell = self.layer, self.layer.cell
        fused = getattr(lstm, "_could_use_gpu_kernel", None)
        cell.call = _int8_lstm_cell_call(type(cell).call.__get__(cell))
        if fused is not None:
            lstm._could_use_gpu_kernel = False  # noqa: SLF001
        try:
            return super().call(inputs, training=training, **kwargs)
        finally:
            del cell.call
            if fused is not None:
                lstm._could_use_gpu_kernel = fused  # noqa: SLF001

    def init_clipping(self):
        """Set every quantizer's clipping factors from the current float kernel."""
        for weight, quantizer, qvars in self._weight_vars:
            k, n = matrix_shape(None, quantizer.role, weight.shape)
            w = np.reshape(weight.numpy(), (k, n))
            if not np.all(np.isfinite(w)):
                raise ValueError(f"layer {self.layer.name}: {quantizer.role} contains NaN or Inf")
            qvars["alpha"].assign(clip_factors(w, quantizer.spec))


def custom_objects() -> dict:
    return {"TfqQuantizeConfig": TfqQuantizeConfig, "WeightFakeQuantizer": WeightFakeQuantizer,
            "TfqQuantizeWrapper": TfqQuantizeWrapper}
