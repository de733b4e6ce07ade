"""Named model configurations. A config is a small dataclass; `to_dict`/`from_dict` round-trip it
through the config.json shipped beside a model's weights."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError
from ..frontend import N_MELS
from ..text import NUM_CLASSES


@dataclass(frozen=True)
class ConformerConfig:
    d_model: int = 144
    num_blocks: int = 4
    num_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    subsample_channels: int = 64
    dropout: float = 0.1
    # Streaming: causal convolutions and attention limited to the current chunk plus
    # `left_context` frames (both in encoder frames of 40 ms). chunk=0: full-context model.
    chunk: int = 8
    left_context: int = 32
    num_mels: int = N_MELS
    num_classes: int = NUM_CLASSES
    kind: str = "conformer"

    @property
    def streaming(self) -> bool:
        return self.chunk > 0


@dataclass(frozen=True)
class LstmConfig:
    units: int = 256
    num_layers: int = 3
    stack: int = 4          # frames merged per LSTM step (40 ms at a 10 ms hop)
    dropout: float = 0.1
    num_mels: int = N_MELS
    num_classes: int = NUM_CLASSES
    kind: str = "lstm"

    @property
    def streaming(self) -> bool:
        return True


# Conformer S/M/L follow the Conformer paper's encoder (Gulati et al. 2020, Table 1); the paper's
# counts (10.3M/30.7M/118.8M) include its LSTM decoder, ours a CTC head: see `tools/count_params.py`.
CONFIGS = {
    "conformer-xs": ConformerConfig(),
    "conformer-s": ConformerConfig(d_model=144, num_blocks=16, num_heads=4, conv_kernel=32, subsample_channels=144),
    "conformer-m": ConformerConfig(d_model=256, num_blocks=16, num_heads=4, conv_kernel=32, subsample_channels=256),
    "conformer-l": ConformerConfig(d_model=512, num_blocks=17, num_heads=8, conv_kernel=32, subsample_channels=512),
    "lstm-xs": LstmConfig(),
}


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict):
    kinds = {"conformer": ConformerConfig, "lstm": LstmConfig}
    kind = d.get("kind")
    if kind not in kinds:
        raise UserError(f"model config has unknown kind {kind!r} (expected one of {', '.join(kinds)})")
    cls = kinds[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"model config has unknown field(s) {', '.join(sorted(unknown))} for kind {kind!r}")
    return cls(**d)


def get_config(name: str):
    if name not in CONFIGS:
        raise UserError(f"unknown model configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]
