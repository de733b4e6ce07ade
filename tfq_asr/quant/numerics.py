"""The quantization formula, written once. QAT, lowering and the C kernels all follow it.

Weights
-------
W is float32 [K, N] (Keras Dense layout: K inputs, N output channels; conv kernels are reshaped
to [K, N] with every non-output axis flattened into K). A group is G consecutive inputs k of one
output channel n: per channel G = K, sub-channel G = `group_size` (ceil(K/G) groups, the last one
shorter when G does not divide K; G > K is one group), per tensor one group over all of W.
Scales and zero points are [groups, N] (per tensor: [1, N], the same value in every column).
With a clipping factor alpha per group (1 without clipping):

  symmetric   qmax = 2^(b-1) - 1                (b=8: -127..127, b=4: -7..7, b=2: ternary -1..1)
              scale = alpha * max|w| / qmax
              q = clamp(round(w / scale), -qmax, qmax);  w' = q * scale
  asymmetric  qmax = 2^b - 1                    (levels 0..qmax)
              lo = min(alpha_lo * min w, 0), hi = max(alpha_hi * max w, 0)   (0 stays exact)
              scale = (hi - lo) / qmax;  zp = clamp(round(-lo / scale), 0, qmax)
              q = clamp(round(w / scale) + zp, 0, qmax);  w' = (q - zp) * scale

Every operation is float32 in exactly this order (a division by scale, never a multiplication
by its reciprocal); round is round-half-to-even (NumPy, tf.round and C nearbyintf agree).
Symmetric q is stored as int8, asymmetric q as uint8 (values 0..2^b-1), zero points as int32.

Scale rules: a group whose clipping range is empty (all zeros) gets scale 1, so q = 0 (or zp)
and w' = 0. float32 scales are floored at the smallest normal float32, so a scale is never 0 or
subnormal (TensorFlow flushes subnormals to zero). float16 scales are rounded *before* q is
computed, so q is exactly what the stored scale reproduces, and they are rounded *up* (the
smallest float16 >= the float32 scale): the grid always covers the clipping range, the rounding
is unique whatever the float16 cast does, and an underflowing scale becomes 2^-24 instead of 0.
Scales above the float16 maximum (65504, i.e. |w| > 65504 * qmax) saturate at it and the
largest weights clamp to +-qmax.

Clipping
--------
alpha is searched per group on `CLIP_GRID` (1.0 down to 0.5 in 26 steps of 0.02), keeping the
first alpha with the smallest L1 or L2 reconstruction error of that group; alpha = 1 comes
first, so clipping never increases a group's error. Asymmetric specs use one alpha for both
ends in that search. Percentile clipping takes clipmax = percentile(|w|, p) (symmetric) or
lo = percentile(w, 100 - p), hi = percentile(w, p) (asymmetric) per group, NumPy's linear
interpolation, expressed as alpha = clipmax / max|w| (alpha_lo = lo / min w, alpha_hi = hi / max w,
each clamped to [0, 1]); a percentile range that collapses to 0 keeps the full range instead.
Public alpha arrays (`clip_factors`) are [groups, N] for symmetric and [2, groups, N] (low
end, high end) for asymmetric specs; per tensor groups = N = 1. QAT computes them once from
the float weights and keeps them fixed.

Activations
-----------
int8 symmetric per row of the last axis: s = max|x_row| / 127 (1 for an all-zero row, float32
division), q = clamp(round(x / s), -127, 127). Static: s = float32(max_abs) / 127 from calibration.

Integer matmul (the C kernels' int8 path, `int_matmul_reference`)
-----------------------------------------------------------------
  ACC[m, g, n] = int32 sum_{k in g} q_a[m, k] * (q_w[k, n] - zp[g, n])          (exact)
  y[m, n] = s_a[m] * (sum_g s_w[g, n] * float32(ACC[m, g, n])) + bias[n]
float32 throughout: the group sum starts at 0 and runs over g in increasing order, each term a
multiply then an add (never fused); then the multiply by s_a, then the add of bias.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BITS = (8, 4, 2)
GRANULARITIES = ("tensor", "channel", "group")
CLIPS = ("none", "l1", "l2", "percentile")
SCALE_DTYPES = ("float32", "float16")
CLIP_GRID = (1.0 - 0.02 * np.arange(26)).astype(np.float32)  # 1.0, 0.98, ..., 0.5
ACT_QMAX = 127
_F16_MAX = float(np.finfo(np.float16).max)
_F16_TINY = float(np.finfo(np.float16).smallest_subnormal)  # 2^-24, the smallest float16 scale
_F32_TINY = float(np.finfo(np.float32).tiny)


def _as_int(value, name: str) -> int:
    """A plain int (NumPy integers accepted, bools and floats refused), so specs stay JSON-able."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}: expected an integer")
    return int(value)


@dataclass(frozen=True)
class WeightQuantSpec:
    """How one weight matrix is quantized (see the module docstring for the formulas)."""
    bits: int = 4
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int | None = None
    clip: str = "none"
    percentile: float = 99.9
    scale_dtype: str = "float32"

    def __post_init__(self):
        bits = _as_int(self.bits, "bits")
        if bits not in BITS:
            raise ValueError(f"bits={self.bits!r}: weight bits must be one of {BITS}")
        object.__setattr__(self, "bits", bits)
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise ValueError(f"symmetric={self.symmetric!r}: expected True or False")
        object.__setattr__(self, "symmetric", bool(self.symmetric))
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r}: expected one of {GRANULARITIES}")
        self._check_group_size()
        if self.clip not in CLIPS:
            raise ValueError(f"clip={self.clip!r}: expected one of {CLIPS}")
        if not isinstance(self.percentile, (int, float, np.number)) or not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile={self.percentile!r}: expected 50 < percentile <= 100")
        object.__setattr__(self, "percentile", float(self.percentile))
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r}: expected one of {SCALE_DTYPES}")

    def _check_group_size(self) -> None:
        if self.granularity != "group":
            if self.group_size is not None:
                raise ValueError(f"group_size={self.group_size!r} is only meaningful with granularity='group'")
            return
        if self.group_size is None:
            raise ValueError("group_size is required with granularity='group'")
        size = _as_int(self.group_size, "group_size")
        if size <= 0:
            raise ValueError(f"group_size={self.group_size!r}: expected a positive group size")
        object.__setattr__(self, "group_size", size)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def group_length(self, k: int) -> int:
        """G for a matrix with k inputs (k per channel and per tensor, never more than k)."""
        return min(self.group_size, k) if self.granularity == "group" else k

    def num_groups(self, k: int) -> int:
        """Rows of the scale array: ceil(K/G), 1 per channel and per tensor."""
        return math.ceil(k / self.group_length(k))

    def alpha_shape(self, k: int, n: int) -> tuple[int, ...]:
        """Shape of the clipping factors `clip_factors` returns for a [k, n] matrix."""
        grid = (1, 1) if self.granularity == "tensor" else (self.num_groups(k), n)
        return grid if self.symmetric else (2,) + grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WeightQuantSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown weight-quantization option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def group_index(k: int, g: int) -> np.ndarray:
    """[K] group number of each input row for groups of g (the last group may be shorter)."""
    if k <= 0 or g <= 0:
        raise ValueError(f"group_index needs positive K and G, got K={k}, G={g}")
    return np.arange(k) // g


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """Integers and parameters of one [K, N] matrix.

    q: [K, N] int8 (symmetric, -qmax..qmax) or uint8 (asymmetric, 0..2^b-1);
    scales: [groups, N] float32 or float16 (spec.scale_dtype); zero_points: [groups, N] int32,
    None when symmetric."""
    q: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    spec: WeightQuantSpec

    def __post_init__(self):
        k, n = self.q.shape
        grid = (self.spec.num_groups(k), n)
        if self.q.dtype != (np.int8 if self.spec.symmetric else np.uint8):
            raise ValueError(f"q has dtype {self.q.dtype}; symmetric weights are int8, asymmetric uint8")
        if self.scales.shape != grid or self.scales.dtype != np.dtype(self.spec.scale_dtype):
            raise ValueError(f"scales must be {self.spec.scale_dtype} {grid}, got {self.scales.dtype} "
                             f"{self.scales.shape}")
        if (self.zero_points is None) != self.spec.symmetric:
            raise ValueError("zero points are required for asymmetric weights and refused for symmetric ones")
        if self.zero_points is not None and self.zero_points.shape != grid:
            raise ValueError(f"zero_points must be {grid}, got {self.zero_points.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def dequantize(self) -> np.ndarray:
        """w' = (q - zp) * scale in float32, [K, N]."""
        k = self.q.shape[0]
        rows = group_index(k, self.spec.group_length(k))
        q = self.q.astype(np.float32)
        if self.zero_points is not None:
            q = q - self.zero_points.astype(np.float32)[rows]
        return q * self.scales.astype(np.float32)[rows]


# ---- weights: grouping and parameters ---------------------------------------------------------

def _check_weights(w) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"weights must be a [K, N] matrix, got shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"weights are empty (shape {w.shape})")
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or Inf")
    return w


def _grouped(w: np.ndarray, spec: WeightQuantSpec) -> np.ndarray:
    """[K, N] -> [groups, G, N] (per tensor [1, K*N, 1]). A ragged last group is padded with
    zeros: they change no group's range (max|w| and [lo, hi], which always holds 0) and
    quantize to exactly 0, so they add nothing to the clipping error either."""
    k, n = w.shape
    if spec.granularity == "tensor":
        return w.reshape(1, k * n, 1)
    g = spec.group_length(k)
    groups = spec.num_groups(k)
    if groups * g == k:
        return w.reshape(groups, g, n)
    padded = np.zeros((groups * g, n), np.float32)
    padded[:k] = w
    return padded.reshape(groups, g, n)


def _ungrouped(x: np.ndarray, k: int, n: int, spec: WeightQuantSpec) -> np.ndarray:
    """Inverse of `_grouped` (drops the padding)."""
    return x.reshape(k, n) if spec.granularity == "tensor" else x.reshape(-1, n)[:k]


def _store_scale(scale: np.ndarray, spec: WeightQuantSpec) -> np.ndarray:
    """The scale as stored, back in float32 (see "Scale rules" in the module docstring)."""
    if spec.scale_dtype == "float32":
        return np.maximum(scale, np.float32(_F32_TINY))
    s = np.clip(scale, np.float32(_F16_TINY), np.float32(_F16_MAX))
    h = s.astype(np.float16)
    h = np.where(h.astype(np.float32) < s, np.nextafter(h, np.float16(_F16_MAX)), h)
    return h.astype(np.float32)


def _params(wg: np.ndarray, alpha, spec: WeightQuantSpec):
    """(scale, zero point or None), each [groups, 1, N] float32, for grouped weights.
    alpha: [groups, 1, N] (symmetric) or a (low, high) pair of them (asymmetric)."""
    one = np.float32(1)
    qmax = np.float32(spec.qmax)
    if spec.symmetric:
        clipmax = np.max(np.abs(wg), axis=1, keepdims=True) * alpha
        return _store_scale(np.where(clipmax > 0, clipmax / qmax, one), spec), None
    a_lo, a_hi = alpha
    lo = np.minimum(np.min(wg, axis=1, keepdims=True) * a_lo, np.float32(0))
    hi = np.maximum(np.max(wg, axis=1, keepdims=True) * a_hi, np.float32(0))
    scale = _store_scale(np.where(hi > lo, (hi - lo) / qmax, one), spec)
    return scale, np.clip(np.round(-lo / scale), 0, qmax)


def _quantize(wg: np.ndarray, scale: np.ndarray, zp, spec: WeightQuantSpec) -> np.ndarray:
    """Integer values as float32, same shape as wg."""
    q = np.round(wg / scale)
    if zp is not None:
        q += zp
    return np.clip(q, np.float32(spec.qmin), np.float32(spec.qmax), out=q)


def _dequantize(q: np.ndarray, scale: np.ndarray, zp) -> np.ndarray:
    return (q - zp) * scale if zp is not None else q * scale


# ---- clipping ---------------------------------------------------------------------------------

def _ones(wg: np.ndarray, spec: WeightQuantSpec):
    ones = np.ones((wg.shape[0], 1, wg.shape[2]), np.float32)
    return ones if spec.symmetric else (ones, ones)


def _search_alpha(wg: np.ndarray, spec: WeightQuantSpec):
    """Grid search of the factor minimising each group's L1 or L2 error (strictly better wins,
    so ties keep the larger alpha and alpha = 1 is never beaten by an equal error)."""
    best = np.ones((wg.shape[0], 1, wg.shape[2]), np.float32)
    best_err = np.full(best.shape, np.inf)
    for a in CLIP_GRID:
        alpha = np.full(best.shape, a, np.float32)
        scale, zp = _params(wg, alpha if spec.symmetric else (alpha, alpha), spec)
        diff = np.abs(_dequantize(_quantize(wg, scale, zp, spec), scale, zp) - wg)
        if spec.clip == "l2":
            diff *= diff
        err = np.sum(diff, axis=1, keepdims=True, dtype=np.float64)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = a
    return best if spec.symmetric else (best, best.copy())


def _group_stat(w: np.ndarray, spec: WeightQuantSpec, fn) -> np.ndarray:
    """fn(values, axis=1, keepdims=True) over the real elements of each group (no padding):
    [groups, 1, N]. Full groups go in one vectorized call, a ragged last group in another."""
    k, n = w.shape
    if spec.granularity == "tensor":
        return fn(w.reshape(1, k * n, 1), axis=1, keepdims=True)
    g = spec.group_length(k)
    full = k // g
    parts = [fn(w[:full * g].reshape(full, g, n), axis=1, keepdims=True)] if full else []
    if full * g < k:
        parts.append(fn(w[full * g:][None], axis=1, keepdims=True))
    return np.concatenate(parts).astype(np.float32)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den clamped to [0, 1]; 1 where den is 0 (that end of the range is already 0)."""
    safe = np.where(den != 0, den, np.float32(1))
    return np.where(den != 0, np.clip(num / safe, 0, 1), np.float32(1)).astype(np.float32)


def _percentile_alpha(w: np.ndarray, spec: WeightQuantSpec):
    p = spec.percentile
    if spec.symmetric:
        a = np.abs(w)
        amax = _group_stat(a, spec, np.max)
        clipmax = _group_stat(a, spec, lambda x, **kw: np.percentile(x, p, **kw))
        # A percentile of 0 in a non-zero group would collapse the range: keep it unclipped.
        return np.where(clipmax > 0, _ratio(clipmax, amax), np.float32(1))
    lo = _group_stat(w, spec, lambda x, **kw: np.percentile(x, 100 - p, **kw))
    hi = _group_stat(w, spec, lambda x, **kw: np.percentile(x, p, **kw))
    a_lo = _ratio(lo, _group_stat(w, spec, np.min))
    a_hi = _ratio(hi, _group_stat(w, spec, np.max))
    empty = (lo >= 0) & (hi <= 0)  # only possible when most weights are 0: keep the full range
    return np.where(empty, np.float32(1), a_lo), np.where(empty, np.float32(1), a_hi)


def _clip_alpha(w: np.ndarray, wg: np.ndarray, spec: WeightQuantSpec):
    if spec.clip == "none":
        return _ones(wg, spec)
    if spec.clip == "percentile":
        return _percentile_alpha(w, spec)
    return _search_alpha(wg, spec)


def _alpha_public(alpha, spec: WeightQuantSpec) -> np.ndarray:
    return alpha[:, 0, :] if spec.symmetric else np.stack([alpha[0][:, 0, :], alpha[1][:, 0, :]])


def _alpha_internal(alpha, k: int, n: int, spec: WeightQuantSpec):
    alpha = np.asarray(alpha, dtype=np.float32)
    want = spec.alpha_shape(k, n)
    if alpha.shape != want:
        raise ValueError(f"clipping factors must have shape {want} for this spec, got {alpha.shape}")
    if not np.all((alpha >= 0) & (alpha <= 1)):
        raise ValueError("clipping factors must lie in [0, 1]")
    return alpha[:, None, :] if spec.symmetric else (alpha[0][:, None, :], alpha[1][:, None, :])


def clip_factors(w, spec: WeightQuantSpec) -> np.ndarray:
    """Clipping factors of `spec.clip` for w: [groups, N] symmetric, [2, groups, N] asymmetric
    (per tensor with groups = N = 1); all ones for clip='none'."""
    w = _check_weights(w)
    return _alpha_public(_clip_alpha(w, _grouped(w, spec), spec), spec)


# ---- weights: public entry points -------------------------------------------------------------

def quantize_weight(w, spec: WeightQuantSpec, alpha=None) -> QuantizedWeight:
    """Quantize a float [K, N] matrix. `alpha` (shape `spec.alpha_shape(K, N)`, e.g. from
    `clip_factors`) replaces the clipping that `spec.clip` would compute."""
    w = _check_weights(w)
    k, n = w.shape
    wg = _grouped(w, spec)
    alpha = _clip_alpha(w, wg, spec) if alpha is None else _alpha_internal(alpha, k, n, spec)
    scale, zp = _params(wg, alpha, spec)
    q = _ungrouped(_quantize(wg, scale, zp, spec), k, n, spec)
    rows = spec.num_groups(k)
    scales = np.broadcast_to(scale[:, 0, :], (rows, n)).astype(spec.scale_dtype)
    zps = None if zp is None else np.broadcast_to(zp[:, 0, :], (rows, n)).astype(np.int32)
    return QuantizedWeight(q=q.astype(np.int8 if spec.symmetric else np.uint8), scales=scales,
                           zero_points=zps, spec=spec)


def fake_quant_weight_np(w, spec: WeightQuantSpec, alpha=None) -> np.ndarray:
    """dequantize(quantize(w)): the float32 weights the quantized model computes with."""
    return quantize_weight(w, spec, alpha).dequantize()


def packed_weight_bytes(k: int, n: int, spec: WeightQuantSpec) -> int:
    """Bytes of a quantized [K, N] matrix: ceil(K*N*b/8) of packed integers, groups*N scales
    (2 or 4 bytes; per tensor too stores N, the packed format has no per-tensor mode) and,
    asymmetric only, groups*N one-byte zero points. The kernels' padding of each row of K to
    32 elements is a format detail counted by `tfq_asr.convert.packing.packed_size`."""
    k, n = _as_int(k, "K"), _as_int(n, "N")
    if k <= 0 or n <= 0:
        raise ValueError(f"K={k}, N={n}: sizes must be positive")
    params = spec.num_groups(k) * n
    scale_bytes = params * (2 if spec.scale_dtype == "float16" else 4)
    zp_bytes = 0 if spec.symmetric else params
    return math.ceil(k * n * spec.bits / 8) + scale_bytes + zp_bytes


def bits_per_weight(k: int, n: int, spec: WeightQuantSpec) -> float:
    """Storage per weight of `packed_weight_bytes`, in bits."""
    return 8.0 * packed_weight_bytes(k, n, spec) / (k * n)


# ---- activations and matmuls ------------------------------------------------------------------

def _check_activations(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise ValueError(f"activations are empty (shape {x.shape})")
    if not np.all(np.isfinite(x)):
        raise ValueError("activations contain NaN or Inf")
    return x


def _quantize_act(x: np.ndarray, s) -> np.ndarray:
    return np.clip(np.round(x / s), -ACT_QMAX, ACT_QMAX).astype(np.int8)


def quantize_activation_dynamic(x) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per row of the last axis: (q [..., K] int8, s [..., 1] float32)."""
    x = _check_activations(x)
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    s = np.where(amax > 0, amax / np.float32(ACT_QMAX), np.float32(1)).astype(np.float32)
    return _quantize_act(x, s), s


def _static_scale(max_abs) -> np.float32:
    if not np.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"calibrated activation range must be a finite non-negative number, got {max_abs}")
    m = np.float32(max_abs)
    return m / np.float32(ACT_QMAX) if m > 0 else np.float32(1)


def quantize_activation_static(x, max_abs: float) -> tuple[np.ndarray, np.float32]:
    """int8 symmetric with a calibrated range: s = float32(max_abs) / 127 (1 if max_abs is 0);
    values beyond the range saturate at +-127."""
    s = _static_scale(max_abs)
    return _quantize_act(_check_activations(x), s), s


def _check_matmul(x, qw: QuantizedWeight, bias):
    x = _check_activations(x)
    k, n = qw.shape
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"activations of shape {x.shape} do not match weights with {k} inputs")
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float32)
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
    return x, bias


def int_matmul_reference(x, qw: QuantizedWeight, bias=None) -> np.ndarray:
    """What the C kernels' int8 path computes for x float32 [M, K]: float32 [M, N].
    Operation order in the module docstring ("Integer matmul"); the C code mirrors it."""
    x, bias = _check_matmul(x, qw, bias)
    k, n = qw.shape
    qa, sa = quantize_activation_dynamic(x)
    g = qw.spec.group_length(k)
    scales = qw.scales.astype(np.float32)
    acc = np.zeros((x.shape[0], n), np.float32)
    for gi in range(qw.spec.num_groups(k)):
        rows = slice(gi * g, min((gi + 1) * g, k))
        wq = qw.q[rows].astype(np.int32)
        if qw.zero_points is not None:
            wq -= qw.zero_points[gi].astype(np.int32)
        part = qa[:, rows].astype(np.int32) @ wq  # exact: 127 * 255 * K fits int32 for K <= 2^16
        acc += scales[gi] * part.astype(np.float32)
    y = sa * acc
    return y + bias if bias is not None else y


def float_matmul_reference(x, qw: QuantizedWeight, bias=None) -> np.ndarray:
    """Float activations with dequantized weights: x @ w' + bias in float32 [M, N], what a QAT
    graph without activation quantization computes. The summation order is the BLAS's, so this
    (like the C float path, which factors s_w out of each group) agrees with other float
    implementations only to float rounding, not bit for bit."""
    x, bias = _check_matmul(x, qw, bias)
    y = x @ qw.dequantize()
    return y + bias if bias is not None else y


# ---- TensorFlow (QAT) -------------------------------------------------------------------------
# The same float32 operations in the same order as the NumPy code above, so the forward values
# are equal bit for bit, eagerly and inside tf.function (see `_div`). TensorFlow is imported on
# first use only: lowering, size accounting and the kernel tests need NumPy alone.

def _tf():
    import tensorflow as tf
    return tf


def _div(a, b):
    """a / b as one IEEE float32 division. Inside tf.function, grappler rewrites a RealDiv by a
    constant into a multiplication by its reciprocal (an ulp off in about half the cases);
    DivNoNan is left alone. No divisor here is ever 0."""
    return _tf().math.divide_no_nan(a, b)


def _straight_through(x, xq):
    """Forward xq exactly, gradient identity. Written xq + (x - x) rather than
    x + stop_gradient(xq - x): the latter rounds twice and can miss xq by an ulp."""
    tf = _tf()
    return tf.stop_gradient(xq) + (x - tf.stop_gradient(x))


def _store_scale_tf(scale, spec: WeightQuantSpec):
    tf = _tf()
    if spec.scale_dtype == "float32":
        return tf.maximum(scale, _F32_TINY)
    s = tf.clip_by_value(scale, _F16_TINY, _F16_MAX)
    h = tf.cast(s, tf.float16)
    # Next float16 up: for positive values (and +0) the bit pattern plus one.
    up = tf.bitcast(tf.bitcast(h, tf.int16) + 1, tf.float16)
    return tf.cast(tf.where(tf.cast(h, tf.float32) < s, up, h), tf.float32)


def _grouped_tf(w, spec: WeightQuantSpec):
    """[K, N] -> [groups, G, N] with the same zero padding as `_grouped`."""
    tf = _tf()
    k, n = w.shape
    if spec.granularity == "tensor":
        return tf.reshape(w, [1, k * n, 1])
    g, groups = spec.group_length(k), spec.num_groups(k)
    return tf.reshape(tf.pad(w, [[0, groups * g - k], [0, 0]]), [groups, g, n])


def _fake_quant_grouped_tf(wg, alpha, spec: WeightQuantSpec):
    tf = _tf()
    qmax = float(spec.qmax)
    if spec.symmetric:
        clipmax = tf.reduce_max(tf.abs(wg), axis=1, keepdims=True) * alpha
        scale = _store_scale_tf(tf.where(clipmax > 0, _div(clipmax, qmax), 1.0), spec)
        return tf.clip_by_value(tf.round(_div(wg, scale)), float(spec.qmin), qmax) * scale
    lo = tf.minimum(tf.reduce_min(wg, axis=1, keepdims=True) * alpha[0], 0.0)
    hi = tf.maximum(tf.reduce_max(wg, axis=1, keepdims=True) * alpha[1], 0.0)
    scale = _store_scale_tf(tf.where(hi > lo, _div(hi - lo, qmax), 1.0), spec)
    zp = tf.clip_by_value(tf.round(_div(-lo, scale)), 0.0, qmax)
    q = tf.clip_by_value(tf.round(_div(wg, scale)) + zp, 0.0, qmax)
    return (q - zp) * scale


def fake_quant_weight_tf(w, spec: WeightQuantSpec, alpha=None):
    """Quantize-dequantize a [K, N] kernel in TensorFlow ops with a straight-through gradient.
    Forward values equal `fake_quant_weight_np(w, spec, alpha)` bit for bit. `alpha` (shape
    `spec.alpha_shape(K, N)`, a fixed array from `clip_factors`) is required when spec.clip is
    not 'none': the clipping search is not repeated in the training graph."""
    tf = _tf()
    w = tf.convert_to_tensor(w, tf.float32)
    if w.shape.rank != 2 or not w.shape.is_fully_defined():
        raise ValueError(f"weights must be a [K, N] matrix of known shape, got {w.shape}")
    k, n = w.shape
    if alpha is None and spec.clip != "none":
        raise ValueError(f"clip={spec.clip!r} needs fixed clipping factors: pass alpha=clip_factors(w, spec)")
    wg = _grouped_tf(w, spec)
    if isinstance(alpha, (tf.Tensor, tf.Variable)):
        # A variable holding the fixed factors (QAT keeps them in the layer so they are saved
        # with its weights); its shape is checked here, its values when it was assigned.
        if tuple(alpha.shape) != spec.alpha_shape(k, n):
            raise ValueError(f"clipping factors must have shape {spec.alpha_shape(k, n)}, got {tuple(alpha.shape)}")
        a = alpha[:, None, :] if spec.symmetric else (alpha[0][:, None, :], alpha[1][:, None, :])
    else:
        ones = np.ones(spec.alpha_shape(k, n), np.float32)
        a = _alpha_internal(ones if alpha is None else alpha, k, n, spec)
    deq = _fake_quant_grouped_tf(wg, a, spec)
    deq = tf.reshape(deq, [k, n]) if spec.granularity == "tensor" else tf.reshape(deq, [-1, n])[:k]
    return _straight_through(w, deq)


def _fake_quant_act_tf(x, s):
    tf = _tf()
    return _straight_through(x, tf.clip_by_value(tf.round(_div(x, s)), -float(ACT_QMAX), float(ACT_QMAX)) * s)


def fake_quant_activation_dynamic_tf(x):
    """int8 per-row dynamic quantize-dequantize (q * s), straight-through gradient."""
    tf = _tf()
    x = tf.convert_to_tensor(x, tf.float32)
    amax = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
    return _fake_quant_act_tf(x, tf.where(amax > 0, _div(amax, float(ACT_QMAX)), 1.0))


def fake_quant_activation_static_tf(x, max_abs):
    """int8 quantize-dequantize with a calibrated range, straight-through gradient. `max_abs`
    is a number or a scalar tensor/variable (a calibrated layer keeps it as a weight)."""
    tf = _tf()
    x = tf.convert_to_tensor(x, tf.float32)
    if isinstance(max_abs, (tf.Tensor, tf.Variable)):
        m = tf.cast(max_abs, tf.float32)
        return _fake_quant_act_tf(x, tf.where(m > 0, _div(m, float(ACT_QMAX)), 1.0))
    return _fake_quant_act_tf(x, float(_static_scale(max_abs)))
