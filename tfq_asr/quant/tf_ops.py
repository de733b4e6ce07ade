"""The numerics contract in TensorFlow ops, for quantization-aware training.

The forward pass computes exactly what `numerics.py` computes (same float32 operations in the
same order, so the same integers and the same dequantized floats); gradients pass straight
through the rounding (w + stop_gradient(w_q - w)).
"""
from __future__ import annotations

import tensorflow as tf

from .numerics import _F16_MAX, _F16_TINY, WeightQuantSpec


def _store_scale(scale, spec: WeightQuantSpec):
    if spec.scale_dtype == "float16":
        return tf.cast(tf.cast(tf.clip_by_value(scale, _F16_TINY, _F16_MAX), tf.float16), tf.float32)
    return scale


def _grouped(w, spec: WeightQuantSpec):
    """[K, N] -> [groups, G, N], zero-padding a ragged last group. Zero padding never changes a
    group's parameters: the symmetric range is max|w| and the asymmetric range always holds 0."""
    k, n = w.shape
    if spec.granularity == "tensor":
        return tf.reshape(w, [1, k * n, 1])
    g = spec.group_length(k)
    groups = -(-k // g)
    return tf.reshape(tf.pad(w, [[0, groups * g - k], [0, 0]]), [groups, g, n])


def fake_quant_weight_tf(w, spec: WeightQuantSpec, alpha=None):
    """Quantize-dequantize a [K, N] kernel; `alpha` [groups, N] are fixed clipping factors."""
    w = tf.convert_to_tensor(w, tf.float32)
    k, n = w.shape
    wg = _grouped(w, spec)
    a = tf.ones([wg.shape[0], 1, wg.shape[2]]) if alpha is None else tf.reshape(
        tf.cast(alpha, tf.float32), [wg.shape[0], 1, wg.shape[2]])
    if spec.symmetric:
        amax = tf.reduce_max(tf.abs(wg), axis=1, keepdims=True) * a
        scale = _store_scale(tf.where(amax > 0, amax / spec.qmax, 1.0), spec)
        q = tf.clip_by_value(tf.round(wg / scale), spec.qmin, spec.qmax)
        deq = q * scale
    else:
        lo = tf.minimum(tf.reduce_min(wg, axis=1, keepdims=True) * a, 0.0)
        hi = tf.maximum(tf.reduce_max(wg, axis=1, keepdims=True) * a, 0.0)
        scale = _store_scale(tf.where(hi > lo, (hi - lo) / spec.qmax, 1.0), spec)
        zp = tf.clip_by_value(tf.round(-lo / scale), 0.0, spec.qmax)
        q = tf.clip_by_value(tf.round(wg / scale) + zp, spec.qmin, spec.qmax)
        deq = (q - zp) * scale
    deq = tf.reshape(deq, [-1, n])[:k] if spec.granularity != "tensor" else tf.reshape(deq, [k, n])
    return w + tf.stop_gradient(deq - w)


def fake_quant_activation_dynamic_tf(x):
    """int8 symmetric per row of the last axis, quantize-dequantize, straight-through."""
    amax = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
    s = tf.where(amax > 0, amax / 127.0, 1.0)
    deq = tf.clip_by_value(tf.round(x / s), -127.0, 127.0) * s
    return x + tf.stop_gradient(deq - x)
