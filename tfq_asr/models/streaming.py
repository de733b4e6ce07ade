"""Streaming step models: one chunk in, one chunk of logits out, every piece of state an explicit
input and output (the kws_streaming "external state" mode), built from the same layers with the
same names as the offline model, so weights (float or quantized) transfer by layer name.

Conformer step (chunk c = cfg.chunk encoder frames = 4c feature frames):
  inputs   features [1, 4c, mels], position [1] (encoder frames already emitted),
           sub1_cache [1, 2, mels, 1] (last 2 normalised feature frames),
           sub2_cache [1, 2, F1, C] (last 2 outputs of the first subsampling conv),
           per block b: block{b}_key / block{b}_value [1, L, d] (projected keys and values of the
           last L = left_context encoder frames), block{b}_conv [1, kernel-1, d] (depthwise conv
           input history)
  outputs  logits [1, c, classes], then every state in the same order (position + c first).
Keys in the cache that lie before the stream start are masked out, exactly as the offline
model's chunk mask does, so streaming a whole utterance chunk by chunk gives the offline
model's logits (to float rounding; bit-identical is not possible because the softmax sums run
over a different number of masked terms). The input length of the offline model must be a
multiple of 4c for that; a stream's last chunk is padded with silence frames.

LSTM step (s = steps stacked frames per call): inputs features [1, stack*s, mels] and h/c per
layer; outputs logits [1, s, classes] and the new h/c. The LSTMs are unrolled (fixed s), so the
converter emits plain fully connected and elementwise ops: the kernels can be lowered to packed
custom ops like any Dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from .config import ConformerConfig, LstmConfig
from .conformer import _ffn
from .layers import GLU, FeatureNormalization, StackFrames

MASKED = -1e9  # the offline attention mask's fill value


@dataclass(frozen=True)
class StateSpec:
    name: str
    shape: tuple


@keras.utils.register_keras_serializable("tfq_asr")
class StreamingRelativeAttention(keras.layers.Layer):
    """The offline RelativeAttention for one chunk: queries of the chunk, keys/values of the
    cached left context followed by the chunk. Same weight (rel_bias), same arithmetic."""

    def __init__(self, num_heads: int, max_distance: int, chunk: int, left_context: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.max_distance = num_heads, max_distance
        self.chunk, self.left_context = chunk, left_context

    def build(self, input_shape):
        self.rel_bias = self.add_weight("rel_bias", shape=(self.num_heads, 2 * self.max_distance + 1),
                                        initializer="zeros", trainable=True)

    def _heads(self, x):
        d = x.shape[-1] // self.num_heads
        return tf.transpose(tf.reshape(x, [1, -1, self.num_heads, d]), [0, 2, 1, 3])

    def call(self, inputs):
        q, k, v, position = inputs          # q [1, c, d]; k, v [1, L + c, d]; position [1]
        c, lc = self.chunk, self.left_context
        d = q.shape[-1] // self.num_heads
        logits = tf.matmul(self._heads(q), self._heads(k), transpose_b=True) * (1.0 / math.sqrt(d))
        i = tf.range(c)[:, None] + lc        # query index inside the [L + c] window
        j = tf.range(lc + c)[None, :]
        dist = tf.clip_by_value(j - i, -self.max_distance, self.max_distance)
        logits += tf.gather(self.rel_bias, dist + self.max_distance, axis=1)[None]
        # A cache slot j holds absolute frame position - L + j: invalid before the stream start.
        # As an additive mask from float arithmetic (positions are whole numbers, so the clip is
        # 0 at or after the start and 1 before it): the converter's comparison, select and the
        # scalar slice of `position` ran as TFLite builtins, each splitting XNNPACK's partition.
        # The softmax is the same to the bit: a masked logit, now logit - 1e9 instead of -1e9,
        # still gives exp(...) == 0, and every row keeps its own chunk's keys.
        t = tf.cast(j, tf.float32) - lc + position          # [1, L + c]
        logits = logits + MASKED * tf.clip_by_value(-t, 0.0, 1.0)
        out = tf.matmul(tf.nn.softmax(logits, axis=-1), self._heads(v))
        return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [1, c, q.shape[-1]])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "max_distance": self.max_distance,
                "chunk": self.chunk, "left_context": self.left_context}


@keras.utils.register_keras_serializable("tfq_asr")
class TakeLast(keras.layers.Layer):
    """The last n steps of the time axis: the part of a window the next chunk needs."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def call(self, x):
        return x[:, -self.n:]

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@keras.utils.register_keras_serializable("tfq_asr")
class AddConstant(keras.layers.Layer):
    def __init__(self, value: float, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def call(self, x):
        return x + self.value

    def get_config(self):
        return {**super().get_config(), "value": self.value}


def _tail(x, n: int, name: str):
    return TakeLast(n, name=name)(x)


def conformer_states(cfg: ConformerConfig) -> list[StateSpec]:
    f1 = (cfg.num_mels - 3) // 2 + 1
    states = [StateSpec("position", (1,)), StateSpec("sub1_cache", (1, 2, cfg.num_mels, 1)),
              StateSpec("sub2_cache", (1, 2, f1, cfg.subsample_channels))]
    for b in range(cfg.num_blocks):
        states += [StateSpec(f"block{b}_key", (1, cfg.left_context, cfg.d_model)),
                   StateSpec(f"block{b}_value", (1, cfg.left_context, cfg.d_model)),
                   StateSpec(f"block{b}_conv", (1, cfg.conv_kernel - 1, cfg.d_model))]
    return states


def build_conformer_step(cfg: ConformerConfig, max_distance: int | None = None) -> keras.Model:
    """max_distance: the clipping distance R of the relative-position biases, (heads, 2R+1),
    of the trained model (default chunk + left context, as the offline model of cfg has); a
    step with another chunk or left context keeps the trained table."""
    if not cfg.streaming:
        raise ValueError("a streaming step needs a streaming configuration (chunk > 0)")
    c, lc = cfg.chunk, cfg.left_context
    max_distance = c + lc if max_distance is None else max_distance
    states = conformer_states(cfg)
    feats = keras.Input(batch_shape=(1, 4 * c, cfg.num_mels), name="features")
    state_in = {s.name: keras.Input(batch_shape=s.shape, name=s.name) for s in states}
    out_states = {"position": AddConstant(float(c), name="next_position")(state_in["position"])}

    x = FeatureNormalization(cfg.num_mels, name="feature_norm")(feats)
    y = layers.Reshape((4 * c, cfg.num_mels, 1), name="subsample_expand")(x)
    y = layers.Concatenate(axis=1, name="subsample_join1")([state_in["sub1_cache"], y])
    out_states["sub1_cache"] = _tail(y, 2, "sub1_next")
    y = layers.Conv2D(cfg.subsample_channels, 3, strides=2, padding="valid", activation="relu",
                      name="subsample_conv1")(y)
    y = layers.Concatenate(axis=1, name="subsample_join2")([state_in["sub2_cache"], y])
    out_states["sub2_cache"] = _tail(y, 2, "sub2_next")
    y = layers.Conv2D(cfg.subsample_channels, 3, strides=2, padding="valid", activation="relu",
                      name="subsample_conv2")(y)
    freq = ((cfg.num_mels - 3) // 2 + 1 - 3) // 2 + 1
    y = layers.Reshape((c, freq * cfg.subsample_channels), name="subsample_flatten")(y)
    x = layers.Dense(cfg.d_model, name="subsample_dense")(y)

    for b in range(cfg.num_blocks):
        p = f"block{b}"
        x = _ffn(x, cfg, f"{p}_ff1")
        # attention over the cached left context + this chunk
        name = f"{p}_mhsa"
        h = layers.LayerNormalization(epsilon=1e-5, scale=False, name=f"{name}_ln")(x)
        q = layers.Dense(cfg.d_model, name=f"{name}_query")(h)
        k = layers.Dense(cfg.d_model, name=f"{name}_key")(h)
        v = layers.Dense(cfg.d_model, name=f"{name}_value")(h)
        k_all = layers.Concatenate(axis=1, name=f"{p}_key_join")([state_in[f"{p}_key"], k])
        v_all = layers.Concatenate(axis=1, name=f"{p}_value_join")([state_in[f"{p}_value"], v])
        out_states[f"{p}_key"] = _tail(k_all, lc, f"{p}_key_next")
        out_states[f"{p}_value"] = _tail(v_all, lc, f"{p}_value_next")
        h = StreamingRelativeAttention(cfg.num_heads, max_distance, c, lc, name=f"{name}_attention")(
            [q, k_all, v_all, state_in["position"]])
        h = layers.Dense(cfg.d_model, name=f"{name}_output")(h)
        x = layers.Add(name=f"{name}_res")([x, h])
        # causal convolution module with its input history
        name = f"{p}_conv"
        h = layers.LayerNormalization(epsilon=1e-5, scale=False, name=f"{name}_ln")(x)
        h = layers.Dense(2 * cfg.d_model, name=f"{name}_pointwise1")(h)
        h = GLU(name=f"{name}_glu")(h)
        h = layers.Concatenate(axis=1, name=f"{p}_conv_join")([state_in[f"{p}_conv"], h])
        out_states[f"{p}_conv"] = _tail(h, cfg.conv_kernel - 1, f"{p}_conv_next")
        h = layers.DepthwiseConv1D(cfg.conv_kernel, padding="valid", name=f"{name}_depthwise")(h)
        h = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(h)
        h = layers.Activation("swish", name=f"{name}_swish")(h)
        h = layers.Dense(cfg.d_model, name=f"{name}_pointwise2")(h)
        x = layers.Add(name=f"{name}_res")([x, h])
        x = _ffn(x, cfg, f"{p}_ff2")
        x = layers.LayerNormalization(epsilon=1e-5, scale=b != cfg.num_blocks - 1, name=f"{p}_ln")(x)
    logits = layers.Dense(cfg.num_classes, name="ctc_head")(x)
    return keras.Model([feats] + [state_in[s.name] for s in states],
                       [logits] + [out_states[s.name] for s in states], name="conformer_ctc_step")


def lstm_states(cfg: LstmConfig) -> list[StateSpec]:
    return [StateSpec(f"lstm{i}_{hc}", (1, cfg.units)) for i in range(cfg.num_layers) for hc in ("h", "c")]


def build_lstm_step(cfg: LstmConfig, steps: int = 8) -> keras.Model:
    states = lstm_states(cfg)
    feats = keras.Input(batch_shape=(1, cfg.stack * steps, cfg.num_mels), name="features")
    state_in = {s.name: keras.Input(batch_shape=s.shape, name=s.name) for s in states}
    out_states = {}
    x = FeatureNormalization(cfg.num_mels, name="feature_norm")(feats)
    x = StackFrames(cfg.stack, name="stack_frames")(x)
    for i in range(cfg.num_layers):
        x, h, c = layers.LSTM(cfg.units, return_sequences=True, return_state=True, unroll=True, name=f"lstm{i}")(
            x, initial_state=[state_in[f"lstm{i}_h"], state_in[f"lstm{i}_c"]])
        out_states[f"lstm{i}_h"], out_states[f"lstm{i}_c"] = h, c
    logits = layers.Dense(cfg.num_classes, name="ctc_head")(x)
    return keras.Model([feats] + [state_in[s.name] for s in states],
                       [logits] + [out_states[s.name] for s in states], name="lstm_ctc_step")


def build_step_model(cfg, lstm_steps: int = 8, source=None):
    """The step model of cfg; `source`, the trained offline model, fixes what the window does
    not (the relative-position table of a Conformer exported with another chunk)."""
    if isinstance(cfg, ConformerConfig):
        return build_conformer_step(cfg, trained_max_distance(source) if source is not None else None)
    if isinstance(lstm_steps, bool) or not isinstance(lstm_steps, (int, np.integer)) or lstm_steps < 1:
        raise ValueError(f"lstm_steps = {lstm_steps!r}: the LSTM steps per call must be a whole number >= 1 "
                         f"(each step reads {cfg.stack} frames of 10 ms)")
    return build_lstm_step(cfg, int(lstm_steps))


def trained_max_distance(model) -> int | None:
    """R of the first relative-position table (heads, 2R+1) in a Keras model, or None."""
    for w in model.weights:
        if "rel_bias" in w.name:
            return (int(w.shape[-1]) - 1) // 2
    return None


def step_states(cfg) -> list[StateSpec]:
    return conformer_states(cfg) if isinstance(cfg, ConformerConfig) else lstm_states(cfg)


def chunk_frames(cfg, lstm_steps: int = 8) -> int:
    """Feature frames (10 ms) one step consumes."""
    return 4 * cfg.chunk if isinstance(cfg, ConformerConfig) else cfg.stack * lstm_steps


def transfer_weights(src, step) -> None:
    """Copy every weight of the offline model `src` (float or quantized) into the step model
    (built from the same config, and quantized with the same policy if src is) by layer name."""
    from ..quant.apply import copy_layer_weights
    for layer in step.layers:
        if not layer.weights:
            continue
        try:
            source = src.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"step layer {layer.name!r} has no counterpart in model {src.name!r}") from None
        copy_layer_weights(source, layer)


def initial_states(cfg) -> list[np.ndarray]:
    return [np.zeros(s.shape, np.float32) for s in step_states(cfg)]


def run_streaming_keras(step, cfg, features: np.ndarray, lstm_steps: int = 8) -> np.ndarray:
    """Stream [T, mels] features through a Keras step model: logits [T', classes] for the
    features padded with silence to whole chunks."""
    from ..frontend import LOG_FLOOR
    n = chunk_frames(cfg, lstm_steps)
    t = features.shape[0]
    padded = np.full((-(-t // n) * n, features.shape[1]), np.log(LOG_FLOOR), np.float32)
    padded[:t] = features
    states = initial_states(cfg)
    run = tf.function(lambda *a: step(list(a), training=False))
    out = []
    for start in range(0, len(padded), n):
        res = run(padded[None, start:start + n], *states)
        out.append(res[0].numpy()[0])
        states = [r.numpy() for r in res[1:]]
    return np.concatenate(out) if out else np.zeros((0, cfg.num_classes), np.float32)
