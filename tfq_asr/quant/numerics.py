"""The quantization formula, written once. QAT, lowering and the C kernels all follow it.

Weights W [K, N] (Keras Dense layout: K inputs, N output channels; conv kernels are reshaped
to [K, N] with every non-output axis in K). Groups of G consecutive inputs per output channel
(G = K per channel; one group over everything per tensor), ceil(K/G) groups, the last one
possibly shorter. For a group with clipping factor alpha:

  symmetric   qmax = 2^(b-1) - 1; scale = alpha * max|w| / qmax
              q = clamp(round(w / scale), -qmax, qmax); w' = q * scale
              (b = 2 is ternary {-1, 0, 1}; b = 4 is -7..7)
  asymmetric  lo = min(alpha * min w, 0), hi = max(alpha * max w, 0) (zero stays exact)
              scale = (hi - lo) / (2^b - 1); zp = clamp(round(-lo / scale), 0, 2^b - 1)
              q = clamp(round(w / scale) + zp, 0, 2^b - 1); w' = (q - zp) * scale

round is round-half-to-even (numpy, TensorFlow and C nearbyintf agree). A group of zeros gets
scale 1. With float16 scale storage the scale is rounded to float16 *before* q is computed,
so the integers are those that the stored scale reproduces.

Activations: int8 symmetric per row, s = max|x_row| / 127 (1 for an all-zero row),
q = clamp(round(x / s), -127, 127).

The integer matmul (what the kernels compute; see `int_matmul_reference`):
  y[m, n] = s_a[m] * sum_g ( s_w[g, n] * float(sum_{k in g} q_a[m, k] * (q_w[k, n] - zp[g, n])) ) + bias[n]
with the group sum accumulated in float32 in increasing g, then the multiply by s_a, then bias.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BITS = (8, 4, 2)
GRANULARITIES = ("tensor", "channel", "group")
CLIPS = ("none", "l1", "l2", "percentile")
SCALE_DTYPES = ("float32", "float16")
# Clipping search grid: alpha from 1.0 down to 0.5 in steps of 0.02 (26 candidates). 1.0 is
# in the grid, so the search can never do worse than no clipping.
CLIP_GRID = np.round(np.arange(1.0, 0.4999, -0.02), 4)
_F16_MAX = float(np.finfo(np.float16).max)
_F16_TINY = float(np.finfo(np.float16).tiny)


@dataclass(frozen=True)
class WeightQuantSpec:
    bits: int = 4
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int | None = None
    clip: str = "none"
    percentile: float = 99.9
    scale_dtype: str = "float32"

    def __post_init__(self):
        if self.bits not in BITS:
            raise ValueError(f"bits={self.bits!r}: weight bits must be one of {BITS}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r}: expected one of {GRANULARITIES}")
        if self.granularity == "group":
            if not isinstance(self.group_size, int) or self.group_size <= 0:
                raise ValueError(f"group_size={self.group_size!r}: sub-channel quantization needs a positive "
                                 "integer group size")
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size!r} is only meaningful with granularity='group'")
        if self.clip not in CLIPS:
            raise ValueError(f"clip={self.clip!r}: expected one of {CLIPS}")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile={self.percentile!r}: expected 0 < percentile <= 100")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r}: expected one of {SCALE_DTYPES}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def group_length(self, k: int) -> int:
        """G for a matrix with k inputs (k for per-channel and per-tensor)."""
        return self.group_size if self.granularity == "group" else k

    def num_groups(self, k: int) -> int:
        return math.ceil(k / self.group_length(k))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WeightQuantSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown weight-quantization option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class QuantizedWeight:
    """q: [K, N] int8 (symmetric, signed) or uint8 (asymmetric, 0..2^b-1);
    scales: [groups, N] float32/float16; zero_points: [groups, N] int32, None if symmetric."""
    q: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    spec: WeightQuantSpec

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def dequantize(self) -> np.ndarray:
        k, _ = self.q.shape
        idx = group_index(k, self.spec.group_length(k))
        q = self.q.astype(np.float32)
        if self.zero_points is not None:
            q = q - self.zero_points[idx].astype(np.float32)
        return q * self.scales.astype(np.float32)[idx]


def group_index(k: int, g: int) -> np.ndarray:
    """[K] index of the group each input row belongs to."""
    return np.arange(k) // g


def _check_weights(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"weights must be a [K, N] matrix, got shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"weights are empty (shape {w.shape})")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or Inf")
    return w


def _grouped(w: np.ndarray, spec: WeightQuantSpec) -> np.ndarray:
    """[K, N] -> [groups, G, N] (per tensor: [1, K*N, 1]); a ragged last group is padded with NaN."""
    k, n = w.shape
    if spec.granularity == "tensor":
        return w.reshape(1, k * n, 1)
    g = spec.group_length(k)
    groups = math.ceil(k / g)
    padded = np.full((groups * g, n), np.nan, np.float32)
    padded[:k] = w
    return padded.reshape(groups, g, n)


def _store_scale(scale: np.ndarray, spec: WeightQuantSpec) -> np.ndarray:
    if spec.scale_dtype == "float16":
        # Keep scales finite and non-zero in float16 (huge weights saturate, tiny ones floor).
        return np.clip(scale, _F16_TINY, _F16_MAX).astype(np.float16).astype(np.float32)
    return scale.astype(np.float32)


def _params(wg: np.ndarray, alpha: np.ndarray, spec: WeightQuantSpec):
    """Scales and zero points [groups, 1, N] for grouped weights and clipping factors."""
    if spec.symmetric:
        amax = np.nanmax(np.abs(wg), axis=1, keepdims=True) * alpha
        scale = np.where(amax > 0, amax / spec.qmax, 1.0)
        return _store_scale(scale, spec), None
    lo = np.minimum(np.nanmin(wg, axis=1, keepdims=True) * alpha, 0.0)
    hi = np.maximum(np.nanmax(wg, axis=1, keepdims=True) * alpha, 0.0)
    scale = _store_scale(np.where(hi > lo, (hi - lo) / spec.qmax, 1.0), spec)
    zp = np.clip(np.round(-lo / scale), 0, spec.qmax)
    return scale, zp


def _quantize_grouped(wg, scale, zp, spec):
    q = np.round(wg / scale)
    if zp is not None:
        q = q + zp
    return np.clip(q, spec.qmin, spec.qmax)


def _dequantize_grouped(q, scale, zp):
    return (q - zp) * scale if zp is not None else q * scale


def _clip_alpha(wg: np.ndarray, spec: WeightQuantSpec) -> np.ndarray:
    """Clipping factor per group and channel, [groups, 1, N]."""
    ones = np.ones((wg.shape[0], 1, wg.shape[2]), np.float32)
    if spec.clip == "none":
        return ones
    if spec.clip == "percentile":
        if spec.symmetric:
            amax = np.nanmax(np.abs(wg), axis=1, keepdims=True)
            pct = np.nanpercentile(np.abs(wg), spec.percentile, axis=1, keepdims=True)
            return np.where(amax > 0, pct / np.where(amax > 0, amax, 1), 1.0).astype(np.float32)
        # Asymmetric: one factor for both ends, from the larger end's percentile.
        hi = np.nanmax(np.abs(wg), axis=1, keepdims=True)
        p = np.nanpercentile(np.abs(wg), spec.percentile, axis=1, keepdims=True)
        return np.where(hi > 0, p / np.where(hi > 0, hi, 1), 1.0).astype(np.float32)
    best_err = np.full(ones.shape, np.inf, np.float64)
    best = ones.copy()
    power = 1 if spec.clip == "l1" else 2
    for a in CLIP_GRID:
        alpha = np.full(ones.shape, a, np.float32)
        scale, zp = _params(wg, alpha, spec)
        deq = _dequantize_grouped(_quantize_grouped(wg, scale, zp, spec), scale, zp)
        err = np.nansum(np.abs(deq - wg, dtype=np.float64) ** power, axis=1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, alpha, best)
    return best


def _check_fit(w: np.ndarray, spec: WeightQuantSpec) -> None:
    if spec.granularity == "group" and spec.group_size > w.shape[0]:
        raise ValueError(f"group_size={spec.group_size} exceeds the {w.shape[0]} inputs of the weight matrix")


def clip_factors(w, spec: WeightQuantSpec) -> np.ndarray:
    """The clipping factor alpha per group and channel, [groups, N] ([1, 1] per tensor).
    QAT searches it once from the float weights and keeps it fixed."""
    w = _check_weights(w)
    _check_fit(w, spec)
    return _clip_alpha(_grouped(w, spec), spec)[:, 0, :]


def quantize_weight(w, spec: WeightQuantSpec, alpha=None) -> QuantizedWeight:
    """Quantize a [K, N] float matrix following the contract in the module docstring.
    `alpha` ([groups, N], from `clip_factors`) overrides the clipping search."""
    w = _check_weights(w)
    k, n = w.shape
    _check_fit(w, spec)
    wg = _grouped(w, spec)
    alpha = _clip_alpha(wg, spec) if alpha is None else np.asarray(alpha, np.float32)[:, None, :]
    scale, zp = _params(wg, alpha, spec)
    q = _quantize_grouped(wg, scale, zp, spec)
    if spec.granularity == "tensor":
        q = q.reshape(k, n)
        scales = np.full((1, n), scale.item(), np.float32)
        zps = None if zp is None else np.full((1, n), zp.item(), np.int32)
    else:
        q = q.reshape(-1, n)[:k]
        scales, zps = scale[:, 0, :], None if zp is None else zp[:, 0, :].astype(np.int32)
    qdtype = np.int8 if spec.symmetric else np.uint8
    return QuantizedWeight(q=q.astype(qdtype), scales=scales.astype(spec.scale_dtype), zero_points=zps, spec=spec)


def fake_quant_weight_np(w, spec: WeightQuantSpec, alpha=None) -> np.ndarray:
    """dequantize(quantize(w)): the float weights the quantized model computes with."""
    return quantize_weight(w, spec, alpha).dequantize()


def quantize_activation_dynamic(x) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per row of the last axis: (q [..., K] int8, s [..., 1] float32)."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.round(x / s), -127, 127).astype(np.int8), s


def quantize_activation_static(x, max_abs: float) -> tuple[np.ndarray, np.float32]:
    """int8 symmetric with a calibrated range (values beyond it saturate)."""
    if not np.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"calibrated activation range must be a finite non-negative number, got {max_abs}")
    s = np.float32(max_abs / 127) if max_abs > 0 else np.float32(1)
    return np.clip(np.round(np.asarray(x, np.float32) / s), -127, 127).astype(np.int8), s


def int_matmul_reference(x, qw: QuantizedWeight, bias=None) -> np.ndarray:
    """What the integer kernels compute for x [M, K] (see the module docstring for the order)."""
    x = np.asarray(x, dtype=np.float32)
    k, n = qw.shape
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"activations of shape {x.shape} do not match weights with {k} inputs")
    qa, sa = quantize_activation_dynamic(x)
    g = qw.spec.group_length(k)
    acc = np.zeros((x.shape[0], n), np.float32)
    for gi in range(qw.spec.num_groups(k)):
        rows = slice(gi * g, min((gi + 1) * g, k))
        wq = qw.q[rows].astype(np.int32)
        if qw.zero_points is not None:
            wq = wq - qw.zero_points[gi].astype(np.int32)
        part = qa[:, rows].astype(np.int32) @ wq  # exact in int32
        acc = acc + qw.scales[gi].astype(np.float32) * part.astype(np.float32)
    y = sa * acc
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return y.astype(np.float32)


def packed_weight_bytes(k: int, n: int, spec: WeightQuantSpec) -> int:
    """Bytes of a quantized [K, N] matrix: packed integers + scales + zero points.
    (The kernels pad each row of K to a multiple of 32 elements; that padding is counted by
    the lowering's own size check, not here.)"""
    groups = 1 if spec.granularity == "tensor" else spec.num_groups(k)
    n_scales = 1 if spec.granularity == "tensor" else groups * n
    scale_bytes = n_scales * (2 if spec.scale_dtype == "float16" else 4)
    zp_bytes = 0 if spec.symmetric else n_scales
    return math.ceil(k * n * spec.bits / 8) + scale_bytes + zp_bytes


def bits_per_weight(k: int, n: int, spec: WeightQuantSpec) -> float:
    return 8.0 * packed_weight_bytes(k, n, spec) / (k * n)
