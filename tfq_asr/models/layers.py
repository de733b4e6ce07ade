"""Small custom layers the recognizers are built from.

Every weight the quantizer may touch lives in a stock Keras layer (Dense, Conv2D,
DepthwiseConv1D, LSTM) placed at the top level of a functional model, so tfmot can annotate
it. The layers here hold glue (normalisation constants, attention arithmetic, gating) and
stay float.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable("tfq_asr")
class FeatureNormalization(keras.layers.Layer):
    """(x - mean) / std with per-bin statistics of the training set, stored in the model."""

    def __init__(self, num_bins: int = 80, **kwargs):
        super().__init__(**kwargs)
        self.num_bins = num_bins

    def build(self, input_shape):
        self.mean = self.add_weight("mean", shape=(self.num_bins,), initializer="zeros", trainable=False)
        self.inv_std = self.add_weight("inv_std", shape=(self.num_bins,), initializer="ones", trainable=False)

    def call(self, x):
        return (x - self.mean) * self.inv_std

    def set_statistics(self, mean, std):
        self.mean.assign(mean)
        self.inv_std.assign(1.0 / tf.maximum(tf.convert_to_tensor(std, tf.float32), 1e-3))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}


@keras.utils.register_keras_serializable("tfq_asr")
class Scale(keras.layers.Layer):
    """Multiply by a constant (the 0.5 of the macaron feed-forward residual)."""

    def __init__(self, factor: float, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.utils.register_keras_serializable("tfq_asr")
class GLU(keras.layers.Layer):
    """Gated linear unit over the last axis: a * sigmoid(b)."""

    def call(self, x):
        a, b = tf.split(x, 2, axis=-1)
        return a * tf.sigmoid(b)


@keras.utils.register_keras_serializable("tfq_asr")
class StackFrames(keras.layers.Layer):
    """[B, T, F] -> [B, ceil(T/n), n*F]: zero-pad time to a multiple of n, then merge n frames."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def call(self, x):
        t = tf.shape(x)[1]
        pad = (-t) % self.n
        x = tf.pad(x, [[0, 0], [0, pad], [0, 0]])
        return tf.reshape(x, [tf.shape(x)[0], -1, self.n * x.shape[-1]])

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def attention_mask(pos, chunk: int, left_context: int):
    """[T, T] float from the [T] frame positions (whole numbers): 0 where query i sees key j
    (j in its own chunk or the `left_context` frames before it), 1 elsewhere. Float clips, not
    comparisons: XNNPACK runs them inside its partition (a comparison and a select ran as
    TFLite builtins). Only for chunk > 0; chunk <= 0 is full context, which needs no mask.
    """
    i, j = pos[:, None], pos[None, :]
    start = tf.floor(i / chunk) * chunk  # exact: whole numbers far below 2^24
    after = tf.clip_by_value(j - (start + chunk) + 1.0, 0.0, 1.0)   # j >= start + chunk
    before = tf.clip_by_value(start - left_context - j, 0.0, 1.0)   # j < start - left_context
    return after + before


@keras.utils.register_keras_serializable("tfq_asr")
class RelativeAttention(keras.layers.Layer):
    """Scaled dot-product attention over already-projected q, k, v with a learned, clipped
    relative-position bias per head (bias[h, clip(j - i, -R, R)] added to the logits).

    Relative positions (not absolute) because a streaming model sees an unbounded stream:
    only distances within the visible window matter, and they stay within [-R, R].
    """

    def __init__(self, num_heads: int, max_distance: int, chunk: int = 0, left_context: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.max_distance = max_distance
        self.chunk = chunk
        self.left_context = left_context

    def build(self, input_shape):
        self.rel_bias = self.add_weight("rel_bias", shape=(self.num_heads, 2 * self.max_distance + 1),
                                        initializer="zeros", trainable=True)

    def _heads(self, x):
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        d = x.shape[-1] // self.num_heads
        return tf.transpose(tf.reshape(x, [b, t, self.num_heads, d]), [0, 2, 1, 3])

    def call(self, inputs):
        q, k, v = inputs
        t = tf.shape(q)[1]
        d = q.shape[-1] // self.num_heads
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
        logits = tf.matmul(qh, kh, transpose_b=True) * (1.0 / math.sqrt(d))
        # The positions come from a value of q (|q| < 0 is false for every q, NaN included, so
        # `zero` is 0.0), not from shapes alone: at a fixed input length the converter would
        # otherwise fold the bias gather into a [heads, T, T] float constant per block and the
        # mask into a [T, T] one (1 MB a block at 1000 frames: six times the w2 weights of
        # conformer-ctc-xs). The same indices, bias values and mask, computed at run time.
        zero = tf.reshape(tf.cast(tf.abs(q[:1, :1, :1]) < 0.0, tf.float32), [])
        pos = tf.range(t, dtype=tf.float32) + zero
        dist = tf.clip_by_value(pos[None, :] - pos[:, None], -self.max_distance, self.max_distance)
        # [T, T, heads] gathered along the first axis, then moved to [heads, T, T]: TFLite's
        # GATHER copies one slice per index, so a slice of all heads is 1/heads of the calls
        bias = tf.gather(tf.transpose(self.rel_bias), tf.cast(dist, tf.int32) + self.max_distance, axis=0)
        logits += tf.transpose(bias, [2, 0, 1])[None]
        if self.chunk > 0:  # chunk 0 (full context) masks nothing
            # a masked logit becomes logit - 1e9: exp(...) is 0 as for -1e9, the softmax the same
            logits -= 1e9 * attention_mask(pos, self.chunk, self.left_context)[None, None]
        out = tf.matmul(tf.nn.softmax(logits, axis=-1), vh)
        out = tf.transpose(out, [0, 2, 1, 3])
        return tf.reshape(out, [tf.shape(q)[0], t, q.shape[-1]])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "max_distance": self.max_distance,
                "chunk": self.chunk, "left_context": self.left_context}


CUSTOM_OBJECTS = {c.__name__: c for c in (FeatureNormalization, Scale, GLU, StackFrames, RelativeAttention)}
