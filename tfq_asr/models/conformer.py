"""Conformer-CTC encoder (Gulati et al. 2020) as a flat functional tf_keras model.

Block: x + 1/2 FFN(x); x + MHSA(x); x + Conv(x); x + 1/2 FFN(x); LayerNorm.
Every projection is a top-level Dense (pointwise convolutions included: a 1x1 conv over time
is a Dense), so the quantizer can annotate each one by name. Pre-module LayerNorms have no
gain (scale=False): a gain right before a Dense is redundant with its weights and the TFLite
converter would fold it into them, breaking the quantization grid.
"""
from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

from .config import ConformerConfig
from .layers import GLU, FeatureNormalization, RelativeAttention, Scale


def _ffn(x, cfg: ConformerConfig, name: str):
    y = layers.LayerNormalization(epsilon=1e-5, scale=False, name=f"{name}_ln")(x)
    y = layers.Dense(cfg.ff_mult * cfg.d_model, activation="swish", name=f"{name}_dense1")(y)
    y = layers.Dropout(cfg.dropout, name=f"{name}_drop1")(y)
    y = layers.Dense(cfg.d_model, name=f"{name}_dense2")(y)
    y = layers.Dropout(cfg.dropout, name=f"{name}_drop2")(y)
    return layers.Add(name=f"{name}_res")([x, Scale(0.5, name=f"{name}_half")(y)])


def _mhsa(x, cfg: ConformerConfig, name: str):
    y = layers.LayerNormalization(epsilon=1e-5, scale=False, name=f"{name}_ln")(x)
    q = layers.Dense(cfg.d_model, name=f"{name}_query")(y)
    k = layers.Dense(cfg.d_model, name=f"{name}_key")(y)
    v = layers.Dense(cfg.d_model, name=f"{name}_value")(y)
    max_distance = cfg.chunk + cfg.left_context if cfg.streaming else 64
    y = RelativeAttention(cfg.num_heads, max_distance, cfg.chunk, cfg.left_context, name=f"{name}_attention")([q, k, v])
    y = layers.Dense(cfg.d_model, name=f"{name}_output")(y)
    y = layers.Dropout(cfg.dropout, name=f"{name}_drop")(y)
    return layers.Add(name=f"{name}_res")([x, y])


def _conv_module(x, cfg: ConformerConfig, name: str):
    y = layers.LayerNormalization(epsilon=1e-5, scale=False, name=f"{name}_ln")(x)
    y = layers.Dense(2 * cfg.d_model, name=f"{name}_pointwise1")(y)
    y = GLU(name=f"{name}_glu")(y)
    if cfg.streaming:  # causal: a frame never waits for future frames
        y = layers.ZeroPadding1D((cfg.conv_kernel - 1, 0), name=f"{name}_causal_pad")(y)
        padding = "valid"
    else:
        padding = "same"
    y = layers.DepthwiseConv1D(cfg.conv_kernel, padding=padding, name=f"{name}_depthwise")(y)
    y = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(y)
    y = layers.Activation("swish", name=f"{name}_swish")(y)
    y = layers.Dense(cfg.d_model, name=f"{name}_pointwise2")(y)
    y = layers.Dropout(cfg.dropout, name=f"{name}_drop")(y)
    return layers.Add(name=f"{name}_res")([x, y])


def _subsample(x, cfg: ConformerConfig):
    """Two 3x3 stride-2 convolutions: 4x fewer frames (40 ms), causal in time when streaming."""
    y = layers.Reshape((-1, cfg.num_mels, 1), name="subsample_expand")(x)
    for i in (1, 2):
        if cfg.streaming:
            y = layers.ZeroPadding2D(((2, 0), (0, 0)), name=f"subsample_pad{i}")(y)
        else:
            y = layers.ZeroPadding2D(((1, 1), (0, 0)), name=f"subsample_pad{i}")(y)
        y = layers.Conv2D(cfg.subsample_channels, 3, strides=2, padding="valid", activation="relu",
                          name=f"subsample_conv{i}")(y)
    freq = ((cfg.num_mels - 3) // 2 + 1 - 3) // 2 + 1
    y = layers.Reshape((-1, freq * cfg.subsample_channels), name="subsample_flatten")(y)
    y = layers.Dense(cfg.d_model, name="subsample_dense")(y)
    return layers.Dropout(cfg.dropout, name="subsample_drop")(y)


def build_conformer(cfg: ConformerConfig, name: str = "conformer_ctc") -> keras.Model:
    """features [B, T, num_mels] -> CTC logits [B, ceil(ceil(T/2)/2), num_classes]."""
    feats = keras.Input(shape=(None, cfg.num_mels), name="features")
    x = FeatureNormalization(cfg.num_mels, name="feature_norm")(feats)
    x = _subsample(x, cfg)
    for b in range(cfg.num_blocks):
        p = f"block{b}"
        x = _ffn(x, cfg, f"{p}_ff1")
        x = _mhsa(x, cfg, f"{p}_mhsa")
        x = _conv_module(x, cfg, f"{p}_conv")
        x = _ffn(x, cfg, f"{p}_ff2")
        last = b == cfg.num_blocks - 1
        x = layers.LayerNormalization(epsilon=1e-5, scale=not last, name=f"{p}_ln")(x)
    logits = layers.Dense(cfg.num_classes, name="ctc_head")(x)
    return keras.Model(feats, logits, name=name)


def output_length(num_frames, cfg: ConformerConfig):
    """Encoder frames for `num_frames` input frames (works on ints and tensors)."""
    t = (num_frames + 1) // 2
    return (t + 1) // 2
