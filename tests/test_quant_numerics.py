"""The numerics contract against direct NumPy formulas, and against the C kernels."""
import math

import numpy as np
import pytest

from tfq_asr.quant.numerics import (WeightQuantSpec, bits_per_weight, fake_quant_weight_np, int_matmul_reference,
                                    packed_weight_bytes, quantize_activation_dynamic, quantize_activation_static,
                                    quantize_weight)

SPECS = [WeightQuantSpec(bits=b, symmetric=s, granularity=g, group_size=gs)
         for b in (8, 4, 2) for s in (True, False)
         for g, gs in (("tensor", None), ("channel", None), ("group", 16), ("group", 24))]


def weights(k=50, n=7, seed=0):
    return np.random.default_rng(seed).normal(size=(k, n)).astype(np.float32)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_integer_ranges_and_reconstruction_error(spec):
    w = weights()
    qw = quantize_weight(w, spec)
    assert qw.q.dtype == (np.int8 if spec.symmetric else np.uint8)
    assert qw.q.min() >= spec.qmin and qw.q.max() <= spec.qmax
    assert qw.scales.shape == (spec.num_groups(50) if spec.granularity != "tensor" else 1, 7)
    # Without clipping every weight is inside the grid: error at most half a step.
    g = spec.group_length(50)
    step = qw.scales.astype(np.float32)[np.arange(50) // g] if spec.granularity != "tensor" else qw.scales[0]
    assert np.all(np.abs(qw.dequantize() - w) <= step / 2 * (1 + 1e-5))


def test_symmetric_levels():
    w = weights()
    assert set(np.unique(quantize_weight(w, WeightQuantSpec(bits=2)).q)) <= {-1, 0, 1}
    assert quantize_weight(w, WeightQuantSpec(bits=4)).q.min() >= -7


def test_per_channel_matches_a_direct_formula():
    w = weights()
    qw = quantize_weight(w, WeightQuantSpec(bits=4))
    scale = np.abs(w).max(0) / 7
    np.testing.assert_array_equal(qw.q, np.clip(np.round(w / scale), -7, 7))
    np.testing.assert_allclose(qw.scales[0], scale, rtol=1e-7)


def test_asymmetric_zero_is_exact_and_ragged_group():
    w = weights(k=37) + 0.5
    w[3, 2] = 0.0
    spec = WeightQuantSpec(bits=4, symmetric=False, granularity="group", group_size=16)
    qw = quantize_weight(w, spec)
    assert qw.scales.shape == (3, 7) and qw.zero_points.shape == (3, 7)
    assert qw.dequantize()[3, 2] == 0.0
    # The ragged last group (5 rows) has its own range.
    last = w[32:]
    np.testing.assert_allclose(qw.scales[2], (np.maximum(last.max(0), 0) - np.minimum(last.min(0), 0)) / 15, rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_clipping_never_increases_error(bits, symmetric, norm):
    w = np.random.default_rng(1).standard_t(3, size=(128, 9)).astype(np.float32)  # heavy tails
    base = dict(bits=bits, symmetric=symmetric, granularity="group", group_size=32)
    plain = fake_quant_weight_np(w, WeightQuantSpec(**base))
    clipped = fake_quant_weight_np(w, WeightQuantSpec(**base, clip=norm))
    p = 1 if norm == "l1" else 2
    per_group = lambda d: (np.abs(d) ** p).reshape(4, 32, 9).sum(1)  # noqa: E731
    assert np.all(per_group(clipped - w) <= per_group(plain - w) * (1 + 1e-6))
    assert (per_group(clipped - w).sum() < per_group(plain - w).sum()) or bits == 8


def test_percentile_clipping_shrinks_the_range():
    w = weights(k=200)
    w[0, 0] = 50.0
    qw = quantize_weight(w, WeightQuantSpec(bits=4, clip="percentile", percentile=99.0))
    assert qw.scales[0, 0] < 50.0 / 7 / 2


def test_float16_scales_are_the_ones_used():
    w = weights() * 1e-3
    qw = quantize_weight(w, WeightQuantSpec(bits=4, scale_dtype="float16"))
    assert qw.scales.dtype == np.float16
    s = qw.scales.astype(np.float32)
    np.testing.assert_array_equal(qw.q, np.clip(np.round(w / s), -7, 7))
    tiny = quantize_weight(np.full((4, 2), 1e-12, np.float32), WeightQuantSpec(bits=4, scale_dtype="float16"))
    assert np.all(tiny.scales > 0) and np.all(np.isfinite(tiny.dequantize()))


def test_all_zero_groups():
    w = np.zeros((32, 3), np.float32)
    for sym in (True, False):
        qw = quantize_weight(w, WeightQuantSpec(bits=2, symmetric=sym, granularity="group", group_size=16))
        assert np.all(qw.scales == 1) and np.all(qw.dequantize() == 0)


@pytest.mark.parametrize("bad, match", [
    (dict(bits=3), "bits"), (dict(granularity="group"), "group size"), (dict(granularity="group", group_size=0), "group"),
    (dict(group_size=32), "only meaningful"), (dict(clip="max"), "clip"), (dict(scale_dtype="bfloat16"), "scale_dtype"),
    (dict(clip="percentile", percentile=0), "percentile"),
])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        WeightQuantSpec(**bad)


def test_bad_weights():
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_weight(np.array([[1.0, np.nan]]), WeightQuantSpec())
    with pytest.raises(ValueError, match="empty"):
        quantize_weight(np.zeros((0, 3)), WeightQuantSpec())
    with pytest.raises(ValueError, match="exceeds"):
        quantize_weight(weights(k=8), WeightQuantSpec(granularity="group", group_size=16))


def test_spec_round_trip():
    spec = WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=64, clip="l2", scale_dtype="float16")
    assert WeightQuantSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown"):
        WeightQuantSpec.from_dict({"bits": 4, "colour": "red"})


def test_activation_quantization():
    x = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.25]], np.float32)
    q, s = quantize_activation_dynamic(x)
    np.testing.assert_array_equal(s[:, 0], [1.0, np.float32(2) / np.float32(127), np.float32(0.5) / np.float32(127)])
    np.testing.assert_array_equal(q, [[0, 0], [64, -127], [127, 64]])  # 63.5 rounds to even 64
    q, s = quantize_activation_static(np.array([3.0, -0.5]), 1.0)
    np.testing.assert_array_equal(q, [127, -64])


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_int_matmul_reference_against_float_formula(spec):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 50)).astype(np.float32)
    w, bias = weights(), rng.normal(size=7).astype(np.float32)
    qw = quantize_weight(w, spec)
    qa, sa = quantize_activation_dynamic(x)
    expected = (qa.astype(np.float64) * sa) @ qw.dequantize().astype(np.float64) + bias
    got = int_matmul_reference(x, qw, bias)
    # float32 accumulation over at most ceil(50/16) groups: a few ulps of the magnitudes summed.
    bound = 1e-5 * ((np.abs(qa) * sa) @ np.abs(qw.dequantize()) + np.abs(bias))
    assert np.all(np.abs(got - expected) <= bound)


def test_size_accounting_by_hand():
    # 144x576 int4, groups of 64 (3 groups), float16 scales, symmetric.
    spec = WeightQuantSpec(bits=4, granularity="group", group_size=64, scale_dtype="float16")
    assert packed_weight_bytes(144, 576, spec) == 144 * 576 // 2 + 3 * 576 * 2
    asym = WeightQuantSpec(bits=2, symmetric=False, granularity="channel")
    assert packed_weight_bytes(100, 10, asym) == 250 + 10 * 4 + 10
    assert packed_weight_bytes(3, 3, WeightQuantSpec(bits=2, granularity="tensor")) == math.ceil(18 / 8) + 4
    assert bits_per_weight(128, 64, WeightQuantSpec(bits=8, granularity="group", group_size=32,
                                                    scale_dtype="float16")) == 8.5


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bits in (4, 2) and s.granularity != "tensor"], ids=str)
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
    for isa in ["ref", "auto"]:
        np.testing.assert_array_equal(lib.linear_q8(packed, x, isa=isa), int_matmul_reference(x, qw, bias))


@pytest.mark.parametrize("spec", SPECS + [WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=16,
                                                           clip="l2", scale_dtype="float16")], ids=str)
def test_tensorflow_fake_quant_equals_numpy(spec):
    import tensorflow as tf
    from tfq_asr.quant.numerics import clip_factors
    from tfq_asr.quant.tf_ops import fake_quant_weight_tf
    w = weights(k=50, n=7, seed=4)
    alpha = clip_factors(w, spec)
    expected = fake_quant_weight_np(w, spec, alpha)
    np.testing.assert_array_equal(fake_quant_weight_tf(w, spec, alpha).numpy(), expected)
    wv = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_weight_tf(wv, spec, alpha) * 3.0)
    np.testing.assert_array_equal(tape.gradient(loss, wv).numpy(), np.full_like(w, 3.0))  # straight through


def test_tensorflow_activation_fake_quant_equals_numpy():
    from tfq_asr.quant.tf_ops import fake_quant_activation_dynamic_tf
    x = np.random.default_rng(5).normal(size=(4, 33)).astype(np.float32)
    x[1] = 0
    q, s = quantize_activation_dynamic(x)
    np.testing.assert_array_equal(fake_quant_activation_dynamic_tf(x).numpy(), q.astype(np.float32) * s)
