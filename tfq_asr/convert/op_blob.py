"""The blob: every constant of one TFQ op in a single uint8 tensor.

The layout is described once, in ``converters/litert/include/tfq/litert_op.h``.  In short: 32
int32 words (magic, version, the weight header of ``packing``, up to 8 op params, the byte
offset and length of the sections data, scales, zero points and bias, zeros), then the
sections at 64-byte aligned offsets.  One tensor instead of six or seven because LiteRT wraps
every input of a custom op in a new TensorBuffer on every call; the blob's leading dims carry
what the op's GetOutputLayouts needs (N, the flatten choice, W_out), and its last dim pads the
byte count up to a multiple of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfq_asr.convert import packing

MAGIC = 0x42514654    # TFQ_BLOB_MAGIC: "TFQB" read as a little-endian int32
VERSION = 1           # TFQ_BLOB_VERSION
WORDS = 32            # TFQ_BLOB_WORDS
HEADER_WORD, PARAMS_WORD, SECTIONS_WORD = 2, 10, 18  # TFQ_BLOB_HEADER, _PARAMS, _SECTIONS
PARAMS_MAX = 8        # TFQ_BLOB_PARAMS_MAX
SECTIONS = ("data", "scales", "zero_points", "bias")
ALIGN = 64            # TFQ_BLOB_ALIGN


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _params_words(params) -> np.ndarray:
    """The PARAMS_MAX int32 words of the op params (at most that many values; the rest 0)."""
    params = np.asarray(params, np.int32).reshape(-1)
    if params.size > PARAMS_MAX:
        raise ValueError(f"{params.size} op params, at most {PARAMS_MAX}")
    words = np.zeros(PARAMS_MAX, np.int32)
    words[:params.size] = params
    return words


@dataclass(frozen=True)
class Blob:
    """A blob read back: its header, params and sections as byte strings (absent: None)."""
    header: np.ndarray
    params: np.ndarray
    sections: dict
    lead_dims: tuple


def build(p: packing.PackedWeights, params, bias: np.ndarray | None, lead_dims) -> np.ndarray:
    """The blob of packed weights p (bias: float32 [N] or None) with the op params (at most 8
    int32 values), as a uint8 array of shape [*lead_dims, rest]."""
    parts = [np.ascontiguousarray(p.data).view(np.uint8).reshape(-1),
             np.ascontiguousarray(p.scales).view(np.uint8).reshape(-1),
             None if p.symmetric else np.ascontiguousarray(p.zero_points).view(np.uint8).reshape(-1),
             None if bias is None else np.ascontiguousarray(bias, np.float32).view(np.uint8).reshape(-1)]
    words = np.zeros(WORDS, np.int32)
    words[0], words[1] = MAGIC, VERSION
    words[HEADER_WORD:HEADER_WORD + packing.HEADER_COUNT] = p.header()
    words[PARAMS_WORD:PARAMS_WORD + PARAMS_MAX] = _params_words(params)
    pos = 4 * WORDS
    for i, part in enumerate(parts):
        if part is None:
            continue
        pos = _align(pos)
        words[SECTIONS_WORD + 2 * i], words[SECTIONS_WORD + 2 * i + 1] = pos, part.size
        pos += part.size
    lead = int(np.prod(lead_dims, dtype=np.int64))
    rest = -(-pos // lead)
    out = np.zeros(lead * rest, np.uint8)
    out[:4 * WORDS] = words.view(np.uint8)
    for i, part in enumerate(parts):
        if part is not None:
            start = int(words[SECTIONS_WORD + 2 * i])
            out[start:start + part.size] = part
    return out.reshape(*lead_dims, rest)


def read(blob: np.ndarray) -> Blob:
    """The parts of a blob (as `build` wrote them; no validation beyond the magic)."""
    raw = np.ascontiguousarray(blob).reshape(-1).view(np.uint8)
    words = raw[:4 * WORDS].view(np.int32)
    if words[0] != MAGIC:
        raise ValueError("not a TFQ op blob (wrong magic)")
    sections = {}
    for i, name in enumerate(SECTIONS):
        off, n = int(words[SECTIONS_WORD + 2 * i]), int(words[SECTIONS_WORD + 2 * i + 1])
        sections[name] = raw[off:off + n].tobytes() if n else None
    return Blob(header=words[HEADER_WORD:HEADER_WORD + packing.HEADER_COUNT].copy(),
                params=words[PARAMS_WORD:PARAMS_WORD + PARAMS_MAX].copy(), sections=sections,
                lead_dims=tuple(int(d) for d in blob.shape[:-1]))


def with_params(blob: np.ndarray, params) -> np.ndarray:
    """A copy of the blob with other op params (the rest of it, dims included, unchanged)."""
    words = _params_words(params)
    out = np.array(blob, np.uint8, copy=True)
    out.reshape(-1)[4 * PARAMS_WORD:4 * (PARAMS_WORD + PARAMS_MAX)] = words.view(np.uint8)
    return out
