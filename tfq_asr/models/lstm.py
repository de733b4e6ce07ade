"""LSTM-CTC recognizer: stacked unidirectional LSTMs over 4 merged frames (40 ms a step).

Unidirectional, so it streams by nature: the state (h, c per layer) is all it carries.
Each LSTM is a top-level stock layer so the quantizer can configure its input and recurrent
kernels separately.
"""
from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

from .config import LstmConfig
from .layers import FeatureNormalization, StackFrames


def build_lstm(cfg: LstmConfig, name: str = "lstm_ctc") -> keras.Model:
    """features [B, T, num_mels] -> CTC logits [B, ceil(T/stack), num_classes]."""
    feats = keras.Input(shape=(None, cfg.num_mels), name="features")
    x = FeatureNormalization(cfg.num_mels, name="feature_norm")(feats)
    x = StackFrames(cfg.stack, name="stack_frames")(x)
    for i in range(cfg.num_layers):
        x = layers.LSTM(cfg.units, return_sequences=True, name=f"lstm{i}")(x)
        x = layers.Dropout(cfg.dropout, name=f"lstm{i}_drop")(x)
    logits = layers.Dense(cfg.num_classes, name="ctc_head")(x)
    return keras.Model(feats, logits, name=name)


def output_length(num_frames, cfg: LstmConfig):
    return (num_frames + cfg.stack - 1) // cfg.stack
