"""The numerics contract (tfq_asr/quant/numerics.py) against direct NumPy formulas, TensorFlow
and the packed format. Every test is seeded and small."""
import json
import math

import numpy as np
import pytest

from tfq_asr.quant.numerics import (CLIP_GRID, QuantizedWeight, WeightQuantSpec, bits_per_weight, clip_factors,
                                    fake_quant_weight_np, float_matmul_reference, group_index,
                                    int_matmul_reference, packed_weight_bytes, quantize_activation_dynamic,
                                    quantize_activation_static, quantize_weight)

GRANULARITIES = (("tensor", None), ("channel", None), ("group", 16), ("group", 24))
SPECS = [WeightQuantSpec(bits=b, symmetric=s, granularity=g, group_size=gs, scale_dtype=d)
         for b in (8, 4, 2) for s in (True, False) for g, gs in GRANULARITIES for d in ("float32", "float16")]
CLIPPED = [WeightQuantSpec(bits=b, symmetric=s, granularity="group", group_size=16, clip=c, percentile=98.0,
                           scale_dtype=d)
           for b in (4, 2) for s in (True, False) for c in ("l1", "l2", "percentile")
           for d in ("float32", "float16")]


def weights(k=50, n=7, seed=0, heavy=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, size=(k, n)) if heavy else rng.normal(size=(k, n))
    return (0.1 * w).astype(np.float32)


def step_per_weight(qw):
    """The stored scale of each weight's group, float32 [K, N]."""
    k = qw.shape[0]
    return qw.scales.astype(np.float32)[group_index(k, qw.spec.group_length(k))]


# ---- integers, scales and reconstruction -------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_integer_ranges_and_half_step_error(spec):
    w = weights()
    qw = quantize_weight(w, spec)
    k, n = w.shape
    assert qw.q.dtype == (np.int8 if spec.symmetric else np.uint8) and qw.shape == (k, n)
    assert qw.q.min() >= spec.qmin and qw.q.max() <= spec.qmax
    assert qw.scales.shape == (spec.num_groups(k), n) and qw.scales.dtype == np.dtype(spec.scale_dtype)
    assert (qw.zero_points is None) == spec.symmetric
    # Without clipping the grid covers every weight (float16 scales are rounded up), so the
    # error is at most half a stored step, up to float32 rounding of w / s and q * s.
    s = step_per_weight(qw)
    assert np.all(np.abs(qw.dequantize() - w) <= s / 2 * (1 + 1e-6))


@pytest.mark.parametrize("bits, levels", [(2, {-1, 0, 1}), (4, set(range(-7, 8))), (8, set(range(-127, 128)))])
def test_symmetric_levels(bits, levels):
    w = np.random.default_rng(1).uniform(-1, 1, size=(4096, 2)).astype(np.float32)
    w[0] = [1.0, -1.0]
    q = quantize_weight(w, WeightQuantSpec(bits=bits)).q
    assert set(np.unique(q).tolist()) == levels  # ends included: max|w| maps to +-qmax exactly


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_asymmetric_uses_every_level_and_zero_is_exact(bits):
    w = weights(k=4096, n=3, seed=2) + 0.05
    w[::7] = 0.0
    for spec in (WeightQuantSpec(bits=bits, symmetric=False),
                 WeightQuantSpec(bits=bits, symmetric=False, clip="l2", scale_dtype="float16")):
        qw = quantize_weight(w, spec)
        assert qw.q.dtype == np.uint8 and qw.zero_points.dtype == np.int32
        assert np.all(qw.dequantize()[::7] == 0.0)
        if spec.clip == "none":
            assert qw.q.min() == 0 and qw.q.max() == 2 ** bits - 1


def test_all_positive_group_keeps_zero_in_range():
    w = np.abs(weights()) + 1.0  # min(w) > 0: lo becomes 0, zero point 0
    qw = quantize_weight(w, WeightQuantSpec(bits=4, symmetric=False))
    assert np.all(qw.zero_points == 0)
    np.testing.assert_array_equal(qw.scales[0], w.max(0) / np.float32(15))


def test_per_channel_matches_a_direct_formula():
    w = weights()
    for sym in (True, False):
        qw = quantize_weight(w, WeightQuantSpec(bits=4, symmetric=sym))
        for j in range(w.shape[1]):  # one channel at a time, scalar float32 arithmetic
            col = w[:, j]
            if sym:
                s = np.float32(np.abs(col).max()) / np.float32(7)
                q = np.clip(np.round(col / s), -7, 7)
                zp = 0
            else:
                lo, hi = min(np.float32(col.min()), np.float32(0)), max(np.float32(col.max()), np.float32(0))
                s = (hi - lo) / np.float32(15)
                zp = np.clip(np.round(-lo / s), 0, 15)
                q = np.clip(np.round(col / s) + zp, 0, 15)
            assert qw.scales[0, j] == s
            np.testing.assert_array_equal(qw.q[:, j], q)
            np.testing.assert_array_equal(qw.dequantize()[:, j], (q - zp).astype(np.float32) * s)


def test_per_tensor_has_one_scale():
    w = weights()
    for sym in (True, False):
        qw = quantize_weight(w, WeightQuantSpec(bits=4, symmetric=sym, granularity="tensor"))
        assert qw.scales.shape == (1, 7) and np.unique(qw.scales).size == 1
    assert quantize_weight(w, WeightQuantSpec(bits=4, granularity="tensor")).scales[0, 0] == \
        np.float32(np.abs(w).max()) / np.float32(7)


@pytest.mark.parametrize("spec", [WeightQuantSpec(bits=b, symmetric=s, granularity="group", group_size=16, clip=c)
                                  for b in (4, 2) for s in (True, False) for c in ("none", "l1", "percentile")],
                         ids=str)
def test_ragged_groups_are_independent_channels(spec):
    """K = 37, G = 16: groups [0:16], [16:32], [32:37]; each is a per-channel quantization of
    its own rows, clipping included."""
    w = weights(k=37, seed=3, heavy=True)
    qw = quantize_weight(w, spec)
    assert qw.scales.shape == (3, 7)
    np.testing.assert_array_equal(group_index(37, 16), np.repeat([0, 1, 2], [16, 16, 5]))
    per_channel = WeightQuantSpec(**{**spec.to_dict(), "granularity": "channel", "group_size": None})
    for gi, rows in enumerate([slice(0, 16), slice(16, 32), slice(32, 37)]):
        part = quantize_weight(w[rows], per_channel)
        np.testing.assert_array_equal(qw.q[rows], part.q)
        np.testing.assert_array_equal(qw.scales[gi], part.scales[0])
        if not spec.symmetric:
            np.testing.assert_array_equal(qw.zero_points[gi], part.zero_points[0])


def test_group_larger_than_k_is_per_channel():
    w = weights(k=8)
    big = quantize_weight(w, WeightQuantSpec(bits=4, granularity="group", group_size=64))
    pc = quantize_weight(w, WeightQuantSpec(bits=4))
    assert big.scales.shape == (1, 7)
    np.testing.assert_array_equal(big.dequantize(), pc.dequantize())


# ---- clipping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("gran, gs", [("group", 32), ("channel", None), ("tensor", None)])
def test_clipping_never_increases_error(bits, symmetric, norm, gran, gs):
    w = weights(k=128, n=9, seed=4, heavy=True)
    base = dict(bits=bits, symmetric=symmetric, granularity=gran, group_size=gs)
    p = 1 if norm == "l1" else 2
    err = lambda spec: np.abs(fake_quant_weight_np(w, spec).astype(np.float64) - w) ** p  # noqa: E731
    plain, clipped = err(WeightQuantSpec(**base)), err(WeightQuantSpec(**base, clip=norm))
    blocks = {"group": (4, 32, 9), "channel": (1, 128, 9), "tensor": (1, -1, 1)}[gran]
    per_group = lambda e: e.reshape(blocks).sum(1)  # noqa: E731
    assert np.all(per_group(clipped) <= per_group(plain) * (1 + 1e-6))
    if bits < 8 and gran != "tensor":
        assert clipped.sum() < plain.sum()  # heavy tails: the search does find a better factor


def test_clip_factors_lie_on_the_grid_and_reproduce_the_quantization():
    w = weights(k=64, seed=5, heavy=True)
    for sym in (True, False):
        spec = WeightQuantSpec(bits=2, symmetric=sym, granularity="group", group_size=32, clip="l2")
        alpha = clip_factors(w, spec)
        assert alpha.shape == spec.alpha_shape(64, 7) == ((2, 7) if sym else (2, 2, 7))
        assert np.all(np.isin(alpha, CLIP_GRID)) and alpha.min() < 1
        np.testing.assert_array_equal(quantize_weight(w, spec, alpha).q, quantize_weight(w, spec).q)
    assert np.all(clip_factors(w, WeightQuantSpec(bits=4)) == 1)
    assert CLIP_GRID[0] == 1.0 and CLIP_GRID[-1] == np.float32(0.5) and len(CLIP_GRID) == 26


def test_percentile_clipping():
    w = weights(k=200, seed=6)
    w[0, 0] = 50.0
    sym = quantize_weight(w, WeightQuantSpec(bits=4, clip="percentile", percentile=99.0))
    pct = np.percentile(np.abs(w), 99.0, axis=0).astype(np.float32)
    alpha = pct / np.abs(w).max(0)
    np.testing.assert_allclose(sym.scales[0], np.abs(w).max(0) * alpha / 7, rtol=1e-6)
    assert sym.q[0, 0] == 7  # the outlier saturates
    asym = quantize_weight(w, WeightQuantSpec(bits=4, symmetric=False, clip="percentile", percentile=99.0))
    lo, hi = np.percentile(w, 1.0, axis=0), np.percentile(w, 99.0, axis=0)
    np.testing.assert_allclose(asym.scales[0], (hi - lo) / 15, rtol=1e-5)


def test_percentile_of_a_mostly_zero_group_keeps_the_full_range():
    w = np.zeros((100, 2), np.float32)
    w[0] = [1.0, -2.0]
    for sym in (True, False):
        qw = quantize_weight(w, WeightQuantSpec(bits=4, symmetric=sym, clip="percentile", percentile=90.0))
        np.testing.assert_allclose(qw.dequantize()[0], w[0], atol=1e-6)


# ---- scale storage and edge cases -------------------------------------------------------------

def test_float16_scales_are_the_ones_used():
    w = weights() * 1e-2
    qw = quantize_weight(w, WeightQuantSpec(bits=4, scale_dtype="float16"))
    assert qw.scales.dtype == np.float16
    s16, s32 = qw.scales.astype(np.float32), np.abs(w).max(0) / np.float32(7)
    np.testing.assert_array_equal(qw.q, np.clip(np.round(w / s16), -7, 7))
    # Rounded up: the smallest float16 not below the float32 scale.
    assert np.all(s16 >= s32)
    assert np.all(np.nextafter(qw.scales, np.float16(0)).astype(np.float32) < s32)


def test_float16_scale_range_is_guarded():
    spec = WeightQuantSpec(bits=8, scale_dtype="float16")
    tiny = quantize_weight(np.full((4, 2), 1e-9, np.float32), spec)
    assert np.all(tiny.scales == np.float16(2.0 ** -24)) and np.all(tiny.q == 0)
    huge = quantize_weight(np.array([[1e8], [-1.0]], np.float32), spec)
    assert huge.scales[0, 0] == np.float16(65504) and huge.q[0, 0] == 127
    assert np.all(np.isfinite(huge.dequantize()))
    sub32 = quantize_weight(np.full((2, 1), 1e-44, np.float32), WeightQuantSpec(bits=8))
    assert sub32.scales[0, 0] == np.finfo(np.float32).tiny  # never 0 or subnormal


def test_all_zero_groups():
    w = weights(k=32, n=3)
    w[16:, 1] = 0.0
    for spec in [WeightQuantSpec(bits=2, symmetric=s, granularity="group", group_size=16, clip=c, scale_dtype=d)
                 for s in (True, False) for c in ("none", "l2", "percentile") for d in ("float32", "float16")]:
        qw = quantize_weight(w, spec)
        assert qw.scales[1, 1] == 1 and np.all(qw.dequantize()[16:, 1] == 0)
        assert np.all(qw.q[16:, 1] == (0 if spec.symmetric else qw.zero_points[1, 1]))
        assert np.all(np.isfinite(qw.dequantize()))


@pytest.mark.parametrize("bad, match", [
    (dict(bits=3), "bits"), (dict(bits=4.0), "bits"), (dict(bits=True), "bits"),
    (dict(symmetric="yes"), "symmetric"), (dict(granularity="row"), "granularity"),
    (dict(granularity="group"), "group_size"), (dict(granularity="group", group_size=0), "group_size"),
    (dict(granularity="group", group_size=-8), "group_size"), (dict(granularity="group", group_size=1.5), "group_size"),
    (dict(group_size=32), "only meaningful"), (dict(clip="max"), "clip"), (dict(scale_dtype="bfloat16"), "scale_dtype"),
    (dict(clip="percentile", percentile=0), "percentile"), (dict(percentile=100.5), "percentile"),
])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        WeightQuantSpec(**bad)


def test_bad_inputs():
    spec = WeightQuantSpec()
    for bad in (np.array([[1.0, np.nan]]), np.array([[np.inf], [1.0]]), np.array([[-np.inf]])):
        with pytest.raises(ValueError, match="NaN or Inf"):
            quantize_weight(bad, spec)
    with pytest.raises(ValueError, match="empty"):
        quantize_weight(np.zeros((0, 3)), spec)
    with pytest.raises(ValueError, match=r"\[K, N\]"):
        quantize_weight(np.ones(5), spec)
    with pytest.raises(ValueError, match="shape"):
        quantize_weight(weights(), spec, alpha=np.ones((2, 7)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantize_weight(weights(), spec, alpha=np.full((1, 7), 1.5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_activation_dynamic(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="calibrated"):
        quantize_activation_static(np.ones(3), -1.0)
    with pytest.raises(ValueError, match="match"):
        int_matmul_reference(np.ones((2, 3)), quantize_weight(weights(), spec))


def test_quantized_weight_checks_its_arrays():
    qw = quantize_weight(weights(), WeightQuantSpec(bits=4, symmetric=False))
    with pytest.raises(ValueError, match="dtype"):
        QuantizedWeight(qw.q.astype(np.int8), qw.scales, qw.zero_points, qw.spec)
    with pytest.raises(ValueError, match="scales"):
        QuantizedWeight(qw.q, qw.scales[:, :3], qw.zero_points, qw.spec)
    with pytest.raises(ValueError, match="zero points"):
        QuantizedWeight(qw.q, qw.scales, None, qw.spec)


def test_spec_round_trip():
    spec = WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=64, clip="l2",
                           scale_dtype="float16")
    assert WeightQuantSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert type(WeightQuantSpec(bits=np.int64(4)).to_dict()["bits"]) is int  # JSON-able
    with pytest.raises(ValueError, match="colour"):
        WeightQuantSpec.from_dict({"bits": 4, "colour": "red"})


# ---- activations and matmuls ------------------------------------------------------------------

def test_activation_quantization():
    x = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.25]], np.float32)
    q, s = quantize_activation_dynamic(x)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (3, 1)
    np.testing.assert_array_equal(s[:, 0], [1.0, np.float32(2) / np.float32(127), np.float32(0.5) / np.float32(127)])
    np.testing.assert_array_equal(q, [[0, 0], [64, -127], [127, 64]])  # 63.5 rounds to even 64
    q3, s3 = quantize_activation_dynamic(np.stack([x, -x]))  # any leading axes, rows on the last
    np.testing.assert_array_equal(q3[1], -q)
    np.testing.assert_array_equal(s3[0], s)
    q, s = quantize_activation_static(np.array([3.0, -0.5, 0.0]), 1.0)
    assert s == np.float32(1) / np.float32(127)
    np.testing.assert_array_equal(q, [127, -64, 0])  # -63.5 -> -64, 3.0 saturates


def int_matmul_by_loops(x, qw, bias):
    """The contract transcribed literally, one output at a time (as the C reference does)."""
    qa, sa = quantize_activation_dynamic(x)
    k, n = qw.shape
    g = qw.spec.group_length(k)
    y = np.zeros((x.shape[0], n), np.float32)
    for m in range(x.shape[0]):
        for j in range(n):
            total = np.float32(0)
            for gi in range(qw.spec.num_groups(k)):
                zp = 0 if qw.zero_points is None else int(qw.zero_points[gi, j])
                acc = sum(int(qa[m, kk]) * (int(qw.q[kk, j]) - zp) for kk in range(gi * g, min(gi * g + g, k)))
                total = np.float32(total + np.float32(qw.scales[gi, j]) * np.float32(acc))
            y[m, j] = np.float32(sa[m, 0] * total) + bias[j]
    return y


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bits != 8] + CLIPPED[:4], ids=str)
def test_int_matmul_reference(spec):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 50)).astype(np.float32)
    w, bias = weights(), rng.normal(size=7).astype(np.float32)
    qw = quantize_weight(w, spec)
    got = int_matmul_reference(x, qw, bias)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, int_matmul_by_loops(x, qw, bias))
    # Computed differently: dequantize both sides, one float64 matmul. The float32 path rounds
    # once per group term and once per multiply/add, so it agrees to a few float32 ulps of the
    # magnitudes involved: 1e-5 relative to sum|x'||w'| + |bias|.
    qa, sa = quantize_activation_dynamic(x)
    xd = qa.astype(np.float64) * sa
    expected = xd @ qw.dequantize().astype(np.float64) + bias
    bound = 1e-5 * (np.abs(xd) @ np.abs(qw.dequantize()) + np.abs(bias))
    assert np.all(np.abs(got - expected) <= bound)
    np.testing.assert_array_equal(int_matmul_reference(x, qw), int_matmul_reference(x, qw, np.zeros(7)))


def test_float_matmul_reference():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 50)).astype(np.float32)
    qw = quantize_weight(weights(), WeightQuantSpec(bits=4, granularity="group", group_size=16))
    bias = rng.normal(size=7).astype(np.float32)
    expected = x.astype(np.float64) @ qw.dequantize().astype(np.float64) + bias
    np.testing.assert_allclose(float_matmul_reference(x, qw, bias), expected, rtol=1e-5, atol=1e-5)


# ---- size accounting and the packed format ------------------------------------------------------

def test_size_accounting_by_hand():
    # 144 x 576 int4, groups of 64 (3 groups, the last one of 16), float16 scales, symmetric.
    spec = WeightQuantSpec(bits=4, granularity="group", group_size=64, scale_dtype="float16")
    assert packed_weight_bytes(144, 576, spec) == 41472 + 3456
    # 100 x 10 asymmetric 2-bit per channel: 250 bytes of codes, 10 float32 scales, 10 zero points.
    assert packed_weight_bytes(100, 10, WeightQuantSpec(bits=2, symmetric=False)) == 250 + 40 + 10
    # Per tensor still stores one scale per column; 3 x 3 at 2 bits is 18 bits -> 3 bytes.
    assert packed_weight_bytes(3, 3, WeightQuantSpec(bits=2, granularity="tensor")) == 3 + 12
    assert bits_per_weight(128, 64, WeightQuantSpec(bits=8, granularity="group", group_size=32,
                                                    scale_dtype="float16")) == 8.5
    assert bits_per_weight(256, 8, WeightQuantSpec(bits=4, granularity="group", group_size=32,
                                                   symmetric=False, scale_dtype="float16")) == 4.75
    with pytest.raises(ValueError, match="positive"):
        packed_weight_bytes(0, 4, spec)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bits != 8 and s.granularity != "tensor"], ids=str)
def test_results_fit_the_packed_format(spec):
    """What the lowering does with a QuantizedWeight: pack, unpack, same integers and scales."""
    from tfq_asr.convert.packing import pack_weights, unpack_weights
    w = weights(k=40)
    qw = quantize_weight(w, spec)
    packed = pack_weights(qw.q, spec.bits, spec.symmetric, spec.group_length(40), qw.scales.astype(np.float32),
                          qw.zero_points, scale_dtype=qw.scales.dtype)
    q, scales, zp = unpack_weights(packed)
    np.testing.assert_array_equal(q.astype(np.int16), qw.q.astype(np.int16))
    np.testing.assert_array_equal(scales, qw.scales.astype(np.float32))
    assert (zp is None) == spec.symmetric and (zp is None or np.array_equal(zp, qw.zero_points))


# ---- TensorFlow --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf():
    import tensorflow
    return tensorflow


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bits != 8 or s.granularity == "group"] + CLIPPED, ids=str)
def test_tensorflow_fake_quant_equals_numpy(tf, spec):
    from tfq_asr.quant.numerics import fake_quant_weight_tf
    w = weights(k=50, n=7, seed=9, heavy=True)
    alpha = clip_factors(w, spec)
    expected = fake_quant_weight_np(w, spec, alpha)
    np.testing.assert_array_equal(fake_quant_weight_tf(w, spec, alpha if spec.clip != "none" else None).numpy(),
                                  expected)
    if spec.clip != "none":  # and inside a graph, where grappler rewrites arithmetic
        graph = tf.function(lambda v: fake_quant_weight_tf(v, spec, alpha))
        np.testing.assert_array_equal(graph(tf.constant(w)).numpy(), expected)
    wv = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_weight_tf(wv, spec, alpha) * 3.0)
    np.testing.assert_array_equal(tape.gradient(loss, wv).numpy(), np.full_like(w, 3.0))  # straight through


def test_tensorflow_fake_quant_in_a_graph_with_outliers(tf):
    """Percentile clipping leaves weights far outside the grid, where the naive STE form
    w + stop_gradient(w' - w) misses w' by an ulp; ours must not."""
    from tfq_asr.quant.numerics import fake_quant_weight_tf
    w = weights(k=512, n=16, seed=10, heavy=True) * 10
    spec = WeightQuantSpec(bits=4, clip="percentile", percentile=99.0)
    alpha = clip_factors(w, spec)
    expected = fake_quant_weight_np(w, spec, alpha)
    assert np.any(w + (expected - w) != expected)  # the naive form would fail here
    graph = tf.function(lambda v: fake_quant_weight_tf(v, spec, alpha))
    np.testing.assert_array_equal(graph(tf.constant(w)).numpy(), expected)
    with pytest.raises(ValueError, match="alpha"):
        fake_quant_weight_tf(w, spec)


def test_tensorflow_activation_fake_quant_equals_numpy(tf):
    from tfq_asr.quant.numerics import fake_quant_activation_dynamic_tf, fake_quant_activation_static_tf
    x = np.random.default_rng(11).normal(size=(2, 4, 33)).astype(np.float32)
    x[0, 1] = 0
    q, s = quantize_activation_dynamic(x)
    qs, ss = quantize_activation_static(x, 1.5)
    graph_dynamic = tf.function(fake_quant_activation_dynamic_tf)  # grappler must not change a bit
    graph_static = tf.function(lambda v: fake_quant_activation_static_tf(v, 1.5))
    for dynamic, static in ((fake_quant_activation_dynamic_tf, lambda v: fake_quant_activation_static_tf(v, 1.5)),
                            (graph_dynamic, graph_static)):
        np.testing.assert_array_equal(dynamic(tf.constant(x)).numpy(), q.astype(np.float32) * s)
        np.testing.assert_array_equal(static(tf.constant(x)).numpy(), qs.astype(np.float32) * ss)
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_activation_dynamic_tf(xv) + fake_quant_activation_static_tf(xv, 1.5))
    np.testing.assert_array_equal(tape.gradient(loss, xv).numpy(), np.full_like(x, 2.0))


def test_sizes_are_consistent_with_packing_row_padding():
    """packed_weight_bytes leaves out the kernels' row padding: equal once K is a multiple of 32."""
    from tfq_asr.convert.packing import packed_size
    spec = WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=32, scale_dtype="float16")
    assert packed_weight_bytes(96, 5, spec) == packed_size(96, 5, 2, 32, False, np.float16).total
    assert packed_weight_bytes(97, 5, spec) < packed_size(97, 5, 2, 32, False, np.float16).total
    assert math.ceil(97 * 5 * 2 / 8) == packed_weight_bytes(97, 5, spec) - 4 * 5 * 3


@pytest.mark.parametrize("spec", [s for s in SPECS + CLIPPED if s.bits in (4, 2) and s.granularity != "tensor"],
                         ids=str)
def test_c_kernels_compute_the_contract(spec):
    """Python numerics -> packed format -> C kernel == int_matmul_reference, bit for bit."""
    from tfq_asr.convert.packing import pack_weights
    from tfq_asr.runtime.kernels import load
    rng = np.random.default_rng(3)
    k, n = 96, 24
    w = rng.normal(size=(k, n)).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    qw = quantize_weight(w, spec)
    packed = pack_weights(qw.q.astype(np.int16), spec.bits, spec.symmetric, spec.group_length(k),
                          qw.scales.astype(np.float32), qw.zero_points, bias)
    x = rng.normal(size=(6, k)).astype(np.float32)
    lib = load()
    for isa in ("ref", "auto"):
        np.testing.assert_array_equal(lib.linear_q8(packed, x, isa=isa), int_matmul_reference(x, qw, bias))
