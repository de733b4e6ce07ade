"""CTC decoding over the character vocabulary of `tfq_asr.text`: greedy and prefix beam search,
each offline and incremental.

Inputs are [T, C] logits or log-probabilities; a log-softmax is applied to every frame (it is
the identity on log-probabilities), so both give the same result. The incremental decoders
process frame by frame, so any chunking of the same frames yields the same text as the
offline functions.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError
from .text import BLANK, decode_ids

NEG_INF = -np.inf


def check_beam_width(beam_width) -> int:
    """The CTC beam width as an int (0 or 1: greedy), or a UserError naming it."""
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 0:
        raise UserError(f"beam_width = {beam_width!r}: expected an integer >= 0 (0 or 1: greedy decoding)")
    return int(beam_width)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _check(logits) -> np.ndarray:
    a = np.asarray(logits)
    if a.ndim != 2:
        raise ValueError(f"CTC decoding expects [T, num_classes] scores, got shape {a.shape}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError("CTC decoding: scores contain NaN or Inf")
    return a


class GreedyDecoder:
    """Best class per frame, repeats merged, blanks dropped; remembers the last class across chunks."""

    def __init__(self):
        self.reset()

    def reset(self):
        self._ids: list[int] = []
        self._last = BLANK

    def accept(self, logits) -> None:
        best = _check(logits).argmax(axis=-1)
        for c in best.tolist():
            if c != self._last and c != BLANK:
                self._ids.append(c)
            self._last = c

    @property
    def text(self) -> str:
        return decode_ids(self._ids)

    def finish(self) -> str:
        return self.text


def greedy_decode(logits) -> str:
    d = GreedyDecoder()
    d.accept(logits)
    return d.text


class BeamDecoder:
    """CTC prefix beam search (Hannun et al. 2014) in log space.

    Each prefix keeps two scores: ending in blank (p_b) and ending in its last character (p_nb).
    Per frame only classes within `prune` (log units) of the frame's best are expanded.
    """

    def __init__(self, beam_width: int = 8, prune: float = 10.0):
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        self.beam_width = beam_width
        self.prune = prune
        self.reset()

    def reset(self):
        self._beams: dict[tuple, tuple[float, float]] = {(): (0.0, NEG_INF)}

    def _step(self, logp: np.ndarray) -> None:
        cands = np.flatnonzero(logp >= logp.max() - self.prune)
        nxt: dict[tuple, list[float]] = {}

        def add(prefix, pb, pnb):
            cur = nxt.get(prefix)
            if cur is None:
                nxt[prefix] = [pb, pnb]
            else:
                cur[0] = np.logaddexp(cur[0], pb)
                cur[1] = np.logaddexp(cur[1], pnb)

        for prefix, (pb, pnb) in self._beams.items():
            total = np.logaddexp(pb, pnb)
            last = prefix[-1] if prefix else None
            for c in cands.tolist():
                lp = float(logp[c])
                if c == BLANK:
                    add(prefix, total + lp, NEG_INF)
                elif c == last:
                    add(prefix, NEG_INF, pnb + lp)             # repeat collapses
                    add(prefix + (c,), NEG_INF, pb + lp)       # blank in between: a new character
                else:
                    add(prefix + (c,), NEG_INF, total + lp)
        ranked = sorted(nxt.items(), key=lambda kv: (-np.logaddexp(*kv[1]), kv[0]))
        self._beams = {p: (s[0], s[1]) for p, s in ranked[:self.beam_width]}

    def accept(self, logits) -> None:
        a = _check(logits)
        if a.size == 0:
            return
        for row in log_softmax(a):
            self._step(row)

    def _best(self) -> tuple:
        return max(self._beams.items(), key=lambda kv: (np.logaddexp(*kv[1]), tuple(-x for x in kv[0])))[0]

    @property
    def text(self) -> str:
        return decode_ids(self._best())

    def finish(self) -> str:
        return self.text


def beam_search_decode(logits, beam_width: int = 8, prune: float = 10.0) -> str:
    d = BeamDecoder(beam_width, prune)
    d.accept(logits)
    return d.finish()


def ctc_decode(logits, beam_width: int = 0) -> str:
    """Text of [T, C] logits: prefix beam search of `beam_width` beams, greedy for 0 or 1."""
    beam_width = check_beam_width(beam_width)
    return beam_search_decode(logits, beam_width) if beam_width > 1 else greedy_decode(logits)
