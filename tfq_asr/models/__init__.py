"""Keras recognizers (Conformer-CTC, LSTM-CTC), named configurations and bundled models."""
from __future__ import annotations

from .config import CONFIGS, ConformerConfig, LstmConfig, config_from_dict, config_to_dict, get_config
from .bundle import AsrModel, PRETRAINED_DIR, list_pretrained, load_model, load_pretrained, save_model
from . import conformer, lstm


def build_model(cfg, name: str | None = None):
    """Build the Keras model of a config (or a config name such as "conformer-xs")."""
    if isinstance(cfg, str):
        cfg = get_config(cfg)
    if isinstance(cfg, ConformerConfig):
        return conformer.build_conformer(cfg, **({"name": name} if name else {}))
    return lstm.build_lstm(cfg, **({"name": name} if name else {}))


def output_length(num_frames, cfg):
    """Number of CTC output frames for `num_frames` feature frames."""
    mod = conformer if isinstance(cfg, ConformerConfig) else lstm
    return mod.output_length(num_frames, cfg)


__all__ = ["CONFIGS", "ConformerConfig", "LstmConfig", "AsrModel", "PRETRAINED_DIR", "build_model",
           "config_from_dict", "config_to_dict", "get_config", "list_pretrained", "load_model",
           "load_pretrained", "output_length", "save_model"]
