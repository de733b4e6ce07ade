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
    return _assemble(p.header(), params, parts, lead_dims)


def _assemble(header, params, parts, lead_dims) -> np.ndarray:
    """The descriptor words, then each present section (uint8, in SECTIONS order) at the next
    aligned offset, as a uint8 array of shape [*lead_dims, rest]."""
    words = np.zeros(WORDS, np.int32)
    words[0], words[1] = MAGIC, VERSION
    words[HEADER_WORD:HEADER_WORD + packing.HEADER_COUNT] = header
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


def concat_columns(blobs, params) -> np.ndarray:
    """One blob computing the output channels of several blobs side by side: layers that read
    the same input (attention's query, key and value projections) as one op.  N is their sum;
    the data rows and the bias are channel-major and follow one another, the scales and zero
    points ([groups][N], format.h) are joined group by group.  Every other header field must
    agree, as must which sections are present.  Blobs with leading dims other than [N] (the
    flatten form) are refused."""
    parts = [read(b) for b in blobs]
    first = parts[0]
    n_word = 5  # header: magic, version, bits, symmetric, K, N, group size, scale is f16
    for i, p in enumerate(parts):
        other = np.delete(p.header, n_word) != np.delete(first.header, n_word)
        if other.any() or len(p.lead_dims) != 1 or p.lead_dims[0] != p.header[n_word]:
            raise ValueError(f"blob {i}: header {p.header.tolist()} or dims {p.lead_dims} cannot "
                             f"share an op with header {first.header.tolist()}")
        if [s is None for s in p.sections.values()] != [s is None for s in first.sections.values()]:
            raise ValueError(f"blob {i}: has other sections than blob 0")
    header = first.header.copy()
    header[n_word] = sum(int(p.header[n_word]) for p in parts)
    k, group = int(header[4]), int(header[6])
    groups = -(-k // group)  # tfq_num_groups

    def joined(name):
        if first.sections[name] is None:
            return None
        arrays = [np.frombuffer(p.sections[name], np.uint8) for p in parts]
        if name in ("scales", "zero_points"):  # [groups][n_i][item bytes] side by side
            arrays = [a.reshape(groups, int(p.header[n_word]), -1) for a, p in zip(arrays, parts)]
            return np.concatenate(arrays, axis=1).reshape(-1)
        return np.concatenate(arrays)

    sections = [joined(name) for name in SECTIONS]
    return _assemble(header, params, sections, (int(header[n_word]),))
