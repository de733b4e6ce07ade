"""Lowering to .tflite with TFQ_FULLY_CONNECTED and running it through LiteRT with our C op.

Exactness: a stack of quantized Dense layers (the op and fused ReLU only) equals the chained
`int_matmul_reference` bit for bit.  A Conformer block has builtin float ops between the
quantized layers (LayerNorm, attention, depthwise conv, swish) that XNNPACK evaluates with
other summation orders and approximations than TensorFlow; their last-bit differences reach
the next layer's int8 activation rounding (TensorFlow's own multi-threaded reductions are not
even run-to-run deterministic), where one flipped rounding moves an activation by a whole
step (1/127 of its row's largest value) and attention spreads that to every frame.  So the
whole model is compared to the Keras model in which every quantized Dense computes
`int_matmul_reference` within 3e-2 of the output's magnitude: measured 1e-7 of it in most
runs and 1e-2 in a run with a flip.  A float model (no quantized layer) matches within 1e-4.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfq_asr.convert import lowering, op_blob
from tfq_asr.convert.lowering import LoweringError, lower_to_tflite, write_atomically
from tfq_asr.models import build_model, get_config
from tfq_asr.models.layers import Scale
from tfq_asr.quant.numerics import WeightQuantSpec, int_matmul_reference, quantize_weight
from tfq_asr.runtime.litert import LiteRtError, LiteRtModel, TfqOpError

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("native_op_library")


def dense_stack(seed=0, k=40):
    tf.random.set_seed(seed)
    inp = keras.Input((None, k), name="features")
    h = keras.layers.Dense(64, activation="relu", name="d1")(inp)
    out = keras.layers.Dense(24, name="d2")(h)
    return keras.Model(inp, out)


def quantize_layers(model, names, spec):
    return {n: quantize_weight(model.get_layer(n).kernel.numpy(), spec) for n in names}


SPECS = [
    WeightQuantSpec(bits=4, granularity="group", group_size=32),
    WeightQuantSpec(bits=2, symmetric=False, granularity="channel", scale_dtype="float16"),
    WeightQuantSpec(bits=4, symmetric=False, granularity="group", group_size=24, scale_dtype="float16",
                    clip="l2"),
]


@pytest.mark.parametrize("spec", SPECS, ids=["w4-g32", "w2-asym-pc-f16", "w4-asym-g24-f16-clip"])
def test_dense_stack_equals_int_matmul_reference_bit_for_bit(tmp_path, spec):
    model = dense_stack()
    q = quantize_layers(model, ["d1", "d2"], spec)
    before = [w.copy() for w in model.get_weights()]
    report = lower_to_tflite(model, q, tmp_path / "d.tflite", input_shape=(1, 7, 40))
    for a, b in zip(before, model.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(a, b)
    assert report["float_ops"] == 0 and set(report["layers"]) == {"d1", "d2"}
    assert report["layers"]["d1"]["bits"] == spec.bits and report["layers"]["d1"]["activation"] == 1
    assert report["file_bytes"] == (tmp_path / "d.tflite").stat().st_size
    x = np.random.default_rng(1).standard_normal((1, 7, 40)).astype(np.float32) * 3
    with LiteRtModel(tmp_path / "d.tflite") as rt:
        assert rt.uses_tfq_ops and rt.layer_names == ["d1", "d2"]
        assert rt.input_names == ["features"] and rt.output_shapes() == [(1, 7, 24)]
        y = rt.run({"features": x})[0]
        assert rt.op_calls() == 2
    h = np.maximum(int_matmul_reference(x[0], q["d1"], model.get_layer("d1").bias.numpy()), 0)
    expect = int_matmul_reference(h, q["d2"], model.get_layer("d2").bias.numpy())
    np.testing.assert_array_equal(y[0], expect)


@pytest.mark.parametrize("spec", SPECS[:2], ids=["w4-g32", "w2-asym-pc-f16"])
def test_column_interleaved_copy_changes_no_bit_and_profile_names_the_op(tmp_path, spec, monkeypatch):
    """The op runs a column-interleaved copy of the weights where AVX-512 VNNI is present
    (TFQ_NO_REPACK turns it off): the outputs are the same bits either way.  A model opened
    with profile=True reports LiteRT's per-op profile with our op in it."""
    model = dense_stack()
    q = quantize_layers(model, ["d1", "d2"], spec)
    lower_to_tflite(model, q, tmp_path / "d.tflite", input_shape=(1, 7, 40))
    x = np.random.default_rng(2).standard_normal((1, 7, 40)).astype(np.float32)
    outs = []
    for off in ("1", "0"):
        monkeypatch.setenv("TFQ_NO_REPACK", off)
        with LiteRtModel(tmp_path / "d.tflite", profile=True) as rt:
            outs.append(rt.run([x])[0])
            rt.run([x])
            summary = rt.profile_summary()
    np.testing.assert_array_equal(outs[0], outs[1])
    assert "TFQ_FULLY_CONNECTED" in summary
    with LiteRtModel(tmp_path / "d.tflite") as rt, pytest.raises(LiteRtError, match="profile=True"):
        rt.profile_summary()


@pytest.mark.parametrize("taps", [25, 32, 60])
def test_long_depthwise_convolutions_are_split_for_xnnpack(tmp_path, taps):
    """A depthwise convolution longer than 25 taps (XNNPACK would run it as one GEMM per
    channel) becomes pieces of at most 25 taps summed by ADD: same result within float
    rounding, the bias once, the fused activation at the end."""
    rng = np.random.default_rng(taps)
    inp = keras.Input((taps + 3, 24), batch_size=1, name="features")
    out = keras.layers.DepthwiseConv1D(taps, activation="relu", name="dw")(inp)
    model = keras.Model(inp, out)
    model.get_layer("dw").set_weights([rng.normal(size=(taps, 24, 1)).astype(np.float32),
                                       rng.normal(size=24).astype(np.float32)])
    report = lower_to_tflite(model, {}, tmp_path / "dw.tflite")
    assert report["depthwise_split"] == (1 if taps > lowering.MAX_DWCONV_TAPS else 0)
    x = rng.normal(size=(1, taps + 3, 24)).astype(np.float32)
    with LiteRtModel(tmp_path / "dw.tflite") as rt:
        y = rt.run([x])[0]
    expect = model(x).numpy()
    np.testing.assert_allclose(y, expect, atol=1e-5 * np.abs(expect).max())
    assert (y >= 0).all() and (y > 0).any()


def _op_names(path) -> list:
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(Path(path).read_bytes(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [m.operatorCodes[op.opcodeIndex].customCode.decode() if m.operatorCodes[op.opcodeIndex].customCode
            else names[max(m.operatorCodes[op.opcodeIndex].builtinCode,
                           m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)]
            for op in m.subgraphs[0].operators]


@pytest.mark.parametrize("strides,batch_free,kernel_size,mode", [
    ((2, 2), False, 3, "none"), ((1, 1), False, 3, "none"), ((2, 2), True, 3, "none"),
    ((2, 3), False, (2, 5), "dynamic"), ((1, 2), False, 1, "none")])
def test_quantized_conv2d_lowers_to_the_packed_conv_op(tmp_path, strides, batch_free, kernel_size, mode):
    """A VALID Conv2D with a quantized kernel becomes one TFQ_CONV_2D (the op gathers the
    patches itself) on the activation path of its quantized Keras layer: the same output bit
    for bit as the im2col ops feeding TFQ_FULLY_CONNECTED (fuse_im2col=False), within float
    rounding of the convolution with the dequantized kernel, and no CONV_2D, slice or
    concatenation left."""
    rng = np.random.default_rng(3)
    shape = (None, 80, 3) if batch_free else (17, 40, 3)
    inp = keras.Input(shape, batch_size=1, name="features")
    out = keras.layers.Conv2D(16, kernel_size, strides=strides, activation="relu", name="conv")(inp)
    model = keras.Model(inp, out)
    spec = WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=32, scale_dtype="float16")
    kernel, bias = model.get_layer("conv").get_weights()
    qw = quantize_weight(kernel.reshape(-1, 16), spec)
    kw = dict(activations={"conv": mode}, input_shape=(1, 17, 80, 3) if batch_free else None)
    report = lower_to_tflite(model, {"conv": qw}, tmp_path / "c.tflite", **kw)
    lower_to_tflite(model, {"conv": qw}, tmp_path / "im2col.tflite", fuse_im2col=False, **kw)
    assert report["layers"]["conv"]["activation_mode"] == mode
    assert report["layers"]["conv"]["op"] == "TFQ_CONV_2D"
    assert [o for o in _op_names(tmp_path / "c.tflite") if o != "RESHAPE"] == ["TFQ_CONV_2D"]
    unfused = _op_names(tmp_path / "im2col.tflite")
    assert "TFQ_FULLY_CONNECTED" in unfused and "TFQ_CONV_2D" not in unfused and "CONV_2D" not in unfused
    x = rng.normal(size=(1, 17, 80 if batch_free else 40, 3)).astype(np.float32)
    with LiteRtModel(tmp_path / "c.tflite") as rt:
        y = rt.run([x])[0]
    with LiteRtModel(tmp_path / "im2col.tflite") as rt:
        y_im2col = rt.run([x])[0]
    assert y.shape == y_im2col.shape and np.array_equal(y, y_im2col)
    ref = model.get_layer("conv")
    ref.set_weights([qw.dequantize().reshape(kernel.shape), bias])
    expect = model(x).numpy()
    if mode == "none":
        np.testing.assert_allclose(y, expect, atol=2e-5 * np.abs(expect).max())
    else:  # int8 activations per row: within their rounding
        np.testing.assert_allclose(y, expect, atol=0.05 * np.abs(expect).max())
    assert (y > 0).any()


@pytest.mark.parametrize("spec", [
    WeightQuantSpec(bits=2, symmetric=False, granularity="group", group_size=32, scale_dtype="float16"),
    WeightQuantSpec(bits=4, granularity="channel")], ids=["w2-asym-g32-f16", "w4-pc"])
def test_layers_reading_one_input_share_one_op(tmp_path, spec):
    """q, k and v reading the same tensor become one TFQ_FULLY_CONNECTED over their joined
    output channels and a SPLIT: outputs bit for bit those of the separate ops (several groups
    and zero points per channel: their [groups][N] sections are joined group by group).  A
    layer of other N (o) or on another input is left alone; the report names the partners and
    its bytes add up to the joined blob; errors of the joined op name all three layers."""
    tf.random.set_seed(5)
    inp = keras.Input((7, 96), batch_size=1, name="x")
    q, k, v = (keras.layers.Dense(64, name=n)(inp) for n in ("q", "k", "v"))
    o = keras.layers.Dense(32, name="o")(inp)
    h = keras.layers.Add()([keras.layers.Multiply()([q, k]), v])
    out = keras.layers.Concatenate()([keras.layers.Dense(32, name="after")(h), o])
    model = keras.Model(inp, out)
    names = ["q", "k", "v", "o", "after"]
    qws = quantize_layers(model, names, spec)
    joined = lower_to_tflite(model, qws, tmp_path / "joined.tflite")
    apart = lower_to_tflite(model, qws, tmp_path / "apart.tflite", fuse_shared_input=False)
    ops = _op_names(tmp_path / "joined.tflite")
    assert ops.count("TFQ_FULLY_CONNECTED") == 3 and ops.count("SPLIT") == 1
    assert _op_names(tmp_path / "apart.tflite").count("TFQ_FULLY_CONNECTED") == 5
    assert joined["layers"]["q"]["shares_op_with"] == ["k", "v"]
    assert "shares_op_with" not in joined["layers"]["o"] and "shares_op_with" not in joined["layers"]["after"]
    shared = sum(joined["layers"][n]["bytes"] for n in ("q", "k", "v"))
    assert shared < sum(apart["layers"][n]["bytes"] for n in ("q", "k", "v"))
    assert joined["file_bytes"] < apart["file_bytes"]
    x = np.random.default_rng(1).normal(size=(1, 7, 96)).astype(np.float32)
    with LiteRtModel(tmp_path / "joined.tflite") as rt:
        y = rt.run([x])[0]
        # named in errors by all three (in the converter's op order)
        assert sorted(rt.layer_names[-1].split("+")) == ["k", "q", "v"]
    with LiteRtModel(tmp_path / "apart.tflite") as rt:
        y_apart = rt.run([x])[0]
    assert np.array_equal(y, y_apart) and np.abs(y).max() > 0


def test_concat_columns_refuses_blobs_of_other_formats():
    """Only blobs that differ in N and their contents join: another bit width, K or section set
    is refused, naming the blob."""
    from tfq_asr.convert import packing
    rng = np.random.default_rng(0)

    def blob(bits, k, n, bias):
        qv = rng.integers(-(1 << (bits - 1)) + 1, 1 << (bits - 1), size=(k, n))
        p = packing.dense_rows(packing.pack_weights(qv.astype(np.int16), bits, True, k,
                                                    np.ones((1, n), np.float32)))
        return op_blob.build(p, [1, 0, 1 if bias else 0, 0], np.zeros(n, np.float32) if bias else None, (n,))

    base = blob(4, 64, 16, True)
    assert op_blob.read(op_blob.concat_columns([base, blob(4, 64, 8, True)], [1, 0, 1, 3])).header[5] == 24
    for other in (blob(2, 64, 16, True), blob(4, 96, 16, True), blob(4, 64, 16, False)):
        with pytest.raises(ValueError, match="blob 1"):
            op_blob.concat_columns([base, other], [1, 0, 1, 0])


def test_buffers_are_external_and_64_byte_aligned(tmp_path):
    from ai_edge_litert import schema_py_generated as schema
    model = dense_stack()
    lower_to_tflite(model, quantize_layers(model, ["d1"], SPECS[0]), tmp_path / "d.tflite",
                    input_shape=(1, 3, 40))
    m = schema.Model.GetRootAs((tmp_path / "d.tflite").read_bytes(), 0)
    external = [m.Buffers(i) for i in range(m.BuffersLength()) if m.Buffers(i).Offset() > 1]
    assert external and all(b.Offset() % 64 == 0 for b in external)
    names = {m.Subgraphs(0).Tensors(i).Name().decode() for i in range(m.Subgraphs(0).TensorsLength())}
    assert "d1/tfq_blob" in names and not any("d1/" in n and "MatMul" in n for n in names)


# ---- Conformer ------------------------------------------------------------------------------

class _IntMatmulDense(keras.layers.Layer):
    """A quantized Dense as the kernel computes it: int_matmul_reference, then the activation."""

    def __init__(self, qw, bias, activation, **kwargs):
        super().__init__(**kwargs)
        self.qw, self.b, self.act = qw, bias, activation

    def call(self, x):
        n = self.qw.shape[1]

        def f(a):
            return int_matmul_reference(a.reshape(-1, a.shape[-1]), self.qw, self.b).reshape(a.shape[:-1] + (n,))
        y = tf.numpy_function(f, [x], tf.float32)
        y.set_shape(x.shape[:-1].concatenate([n]))
        return self.act(y)


def reference_model(model, q):
    def clone(layer):
        if layer.name in q:
            return _IntMatmulDense(q[layer.name], layer.bias.numpy() if layer.use_bias else None,
                                   layer.activation, name=layer.name)
        return layer.__class__.from_config(layer.get_config())
    ref = keras.models.clone_model(model, clone_function=clone)
    for layer in ref.layers:
        if layer.name not in q and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return ref


@pytest.fixture(scope="module")
def conformer():
    tf.random.set_seed(3)
    return build_model(dataclasses.replace(get_config("conformer-xs"), num_blocks=1))


def test_conformer_block_matches_keras_with_int_matmul(tmp_path, conformer):
    dense = [l.name for l in conformer.layers if isinstance(l, keras.layers.Dense)]
    w4 = WeightQuantSpec(bits=4, granularity="group", group_size=32, scale_dtype="float16")
    w2 = WeightQuantSpec(bits=2, symmetric=False, granularity="channel")
    q = {n: quantize_weight(conformer.get_layer(n).kernel.numpy(), w2 if "ff" in n else w4) for n in dense}
    report = lower_to_tflite(conformer, q, tmp_path / "c.tflite", input_shape=(1, 48, 80))
    assert set(report["layers"]) == set(dense) and report["float_ops"] == 0
    # The macaron 1/2 is folded into the second FFN weights by the converter: absorbed exactly.
    assert report["layers"]["block0_ff1_dense2"]["folded_factor"] == 0.5
    assert sorted(report["layers"]["block0_mhsa_query"]["shares_op_with"]) == [
        "block0_mhsa_key", "block0_mhsa_value"]
    assert report["layers"]["block0_ff2_dense1"]["chained_with"] == "block0_ff2_dense2"
    assert report["layers"]["block0_ff1_dense2"]["chained_with"] == "block0_ff1_dense1"
    x = np.random.default_rng(4).standard_normal((1, 48, 80)).astype(np.float32)
    with LiteRtModel(tmp_path / "c.tflite") as rt:
        y = rt.run([x])[0]
        # q, k and v run as one op; each feed-forward block (dense1, swish, dense2) as one
        assert rt.op_calls() == len(dense) - 4
    expect = reference_model(conformer, q)(x, training=False).numpy()
    assert y.shape == expect.shape == (1, 12, conformer.output_shape[-1])
    assert np.abs(y - expect).max() <= 3e-2 * np.abs(expect).max()


def feed_forward_stack(seed=0, k=40, hidden=96):
    tf.random.set_seed(seed)
    inp = keras.Input((None, k), name="features")
    h = keras.layers.Dense(hidden, activation="swish", name="up")(inp)
    return keras.Model(inp, keras.layers.Dense(k, name="down")(h))


@pytest.mark.parametrize("spec", SPECS[:2], ids=["w4-g32", "w2-asym-pc-f16"])
def test_feed_forward_block_runs_as_one_op(tmp_path, spec):
    """Dense, swish, Dense: one TFQ_FULLY_CONNECTED call with both blobs and the op's own swish,
    the same numbers as two calls with XNNPACK's swish between them to float rounding (a swish
    a few ulp apart can move one int8 rounding of the second layer's input)."""
    model = feed_forward_stack()
    q = quantize_layers(model, ["up", "down"], spec)
    fused, apart = tmp_path / "f.tflite", tmp_path / "a.tflite"
    report = lower_to_tflite(model, q, fused, input_shape=(1, 7, 40))
    lower_to_tflite(model, q, apart, input_shape=(1, 7, 40), fuse_feed_forward=False)
    assert report["layers"]["up"]["chained_with"] == "down"
    assert report["layers"]["down"]["chained_with"] == "up"
    x = np.random.default_rng(6).normal(size=(1, 7, 40)).astype(np.float32)
    check_one_call_as_two(model, q, fused, apart, x)


def check_one_call_as_two(model, q, fused, apart, x):
    """The fused file runs one op call, the other two, with the same output to float rounding,
    and both are the Keras model with integer matmuls to the int8 rounding of activations."""
    with LiteRtModel(fused) as rt:
        y = rt.run([x])[0]
        assert rt.op_calls() == 1
    with LiteRtModel(apart) as rt:
        y_apart = rt.run([x])[0]
        assert rt.op_calls() == 2
    assert y.shape == y_apart.shape
    np.testing.assert_allclose(y, y_apart, rtol=0, atol=1e-2 * np.abs(y_apart).max())
    expect = reference_model(model, q)(x, training=False).numpy()
    assert np.abs(y - expect).max() <= 3e-2 * np.abs(expect).max()
    return y


def test_unrolled_lstm_input_kernel_runs_as_one_op_over_the_steps(tmp_path):
    """An unrolled LSTM's input kernel, one op per step on the rows of an UNPACK, becomes one op
    over all the steps and an UNPACK of its output; the recurrent kernel stays one op per step.
    The same outputs as one call per step, to float rounding, and as Keras with the dequantized
    kernels (float activations: no int8 rounding to flip)."""
    steps, k, units = 6, 12, 16
    keras.utils.set_random_seed(3)
    inp = keras.Input(batch_shape=(1, steps, k), name="features")
    state = [keras.Input(batch_shape=(1, units), name=n) for n in ("h", "c")]  # as a streaming step
    out = keras.layers.LSTM(units, return_sequences=True, unroll=True, name="lstm0")(inp, initial_state=state)
    model = keras.Model([inp] + state, out)
    kernel, recurrent, _ = model.get_layer("lstm0").get_weights()
    spec = WeightQuantSpec(bits=4, granularity="group", group_size=4)
    q = {"lstm0/kernel": quantize_weight(kernel, spec), "lstm0/recurrent_kernel": quantize_weight(recurrent, spec)}
    batched, apart = tmp_path / "b.tflite", tmp_path / "a.tflite"
    report = lower_to_tflite(model, q, batched, float_activations=list(q))
    report_apart = lower_to_tflite(model, q, apart, float_activations=list(q), batch_unpacked_rows=False)
    assert report["layers"]["lstm0/kernel"]["ops"] == 1 and report["layers"]["lstm0/kernel"]["batched_rows"] == steps
    assert report["layers"]["lstm0/recurrent_kernel"]["ops"] == steps
    assert "batched_rows" not in report["layers"]["lstm0/recurrent_kernel"]
    assert report_apart["layers"]["lstm0/kernel"]["ops"] == steps
    assert _op_names(batched).count("TFQ_FULLY_CONNECTED") == steps + 1
    assert _op_names(apart).count("TFQ_FULLY_CONNECTED") == 2 * steps
    rng = np.random.default_rng(8)
    feeds = {"features": rng.normal(size=(1, steps, k)).astype(np.float32),
             "h": rng.normal(size=(1, units)).astype(np.float32), "c": rng.normal(size=(1, units)).astype(np.float32)}
    with LiteRtModel(batched) as rt:
        y = rt.run(feeds)[0]
        assert rt.op_calls() == steps + 1
    with LiteRtModel(apart) as rt:
        y_apart = rt.run(feeds)[0]
    np.testing.assert_allclose(y, y_apart, rtol=0, atol=1e-6 * np.abs(y_apart).max())
    expect = lowering._clone_with_dequantized(model, q)([feeds[n] for n in ("features", "h", "c")]).numpy()
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-5 * np.abs(expect).max())


@pytest.mark.parametrize("layer,word,value,message", [
    ("down", op_blob.HEADER_WORD + 4, 95, r"second layer: K = 95, but the first layer \(#0\) gives N = 96"),
    ("down", op_blob.PARAMS_WORD + 2, lowering.FLAG_FLATTEN, "second layer params: unknown activation 0 or flags 2"),
    ("up", op_blob.PARAMS_WORD + 2, lowering.FLAG_FLATTEN, "the flatten flag on the first of two chained layers"),
])
def test_chained_layers_that_do_not_fit_raise_by_name(tmp_path, layer, word, value, message):
    model = feed_forward_stack()
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    lower_to_tflite(model, quantize_layers(model, ["up", "down"], SPECS[0]), good, input_shape=(1, 7, 40))
    expect_blob_error(good, bad, layer, {word: value}, np.ones((1, 7, 40), np.float32), message, layer)


def test_float_model_through_the_same_runtime(tmp_path, conformer):
    report = lower_to_tflite(conformer, {}, tmp_path / "f.tflite", input_shape=(1, 32, 80))
    assert report["layers"] == {} and report["float_ops"] > 0
    x = np.random.default_rng(5).standard_normal((1, 32, 80)).astype(np.float32)
    with LiteRtModel(tmp_path / "f.tflite", threads=2) as rt:
        assert not rt.uses_tfq_ops
        y = rt.run([x])[0]
        y2 = rt.run([x])[0]  # cached buffers give the same answer
    np.testing.assert_allclose(y, conformer(x, training=False).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(y, y2)


def test_folded_non_power_of_two_scale_is_refused_by_name(tmp_path):
    inp = keras.Input((None, 16), name="features")
    h = keras.layers.Dense(8, name="proj")(inp)
    model = keras.Model(inp, Scale(3.0, name="triple")(h))
    q = quantize_layers(model, ["proj"], SPECS[0])
    with pytest.raises(LoweringError, match="'proj'"):
        lower_to_tflite(model, q, tmp_path / "p.tflite", input_shape=(1, 4, 16))
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_early(tmp_path):
    model = dense_stack()
    q = quantize_layers(model, ["d1"], SPECS[0])
    with pytest.raises(LoweringError, match="'nope'"):
        lower_to_tflite(model, {"nope": q["d1"]}, tmp_path / "x.tflite", input_shape=(1, 2, 40))
    with pytest.raises(LoweringError, match="'d2'.*kernel"):
        lower_to_tflite(model, {"d2": q["d1"]}, tmp_path / "x.tflite", input_shape=(1, 2, 40))
    w8 = quantize_layers(model, ["d1"], WeightQuantSpec(bits=8))
    with pytest.raises(LoweringError, match="8-bit"):
        lower_to_tflite(model, w8, tmp_path / "x.tflite", input_shape=(1, 2, 40))
    with pytest.raises(LoweringError, match="input_shape"):
        lower_to_tflite(model, q, tmp_path / "x.tflite")
    assert list(tmp_path.iterdir()) == []


# ---- errors from the op's side channel ------------------------------------------------------

def edit_blob(src: Path, dst: Path, layer: str, words: dict) -> None:
    """A copy of a lowered file whose layer's blob has other descriptor words ({index: value},
    op_blob.py)."""
    from tensorflow.lite.tools import flatbuffer_utils
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    t = next(t for t in m.subgraphs[0].tensors if t.name.decode() == f"{layer}/tfq_blob")
    raw = np.asarray(m.buffers[t.buffer].data, np.uint8).copy()
    descriptor = raw[:4 * op_blob.WORDS].view(np.int32)
    for index, value in words.items():
        descriptor[index] = value
    m.buffers[t.buffer].data = raw
    dst.write_bytes(lowering._serialize_external(m))


def corrupt_header(src: Path, dst: Path, layer: str, index: int, value: int) -> None:
    edit_blob(src, dst, layer, {op_blob.HEADER_WORD + index: value})


def expect_blob_error(good: Path, bad: Path, layer: str, words: dict, x, message: str, named):
    """bad = good with layer's blob descriptor words edited (edit_blob): running it raises a
    TfqOpError matching message that names layer `named` (None: no layer), and good still
    runs.  Returns the error."""
    edit_blob(good, bad, layer, words)
    with LiteRtModel(bad) as rt:
        with pytest.raises(TfqOpError, match=message) as err:
            rt.run([x])
        assert err.value.layer == named
    with LiteRtModel(good) as rt:  # the intact file still runs
        assert np.isfinite(rt.run([x])[0]).all()
    return err.value


@pytest.fixture(scope="module")
def lowered_stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("stack") / "d.tflite"
    model = dense_stack()
    lower_to_tflite(model, quantize_layers(model, ["d1", "d2"], SPECS[0]), path, input_shape=(1, 5, 40))
    return path


H, S = op_blob.HEADER_WORD, op_blob.SECTIONS_WORD


@pytest.mark.parametrize("word,value,message,named", [
    (H + 4, 64 + 40, r"the data section has 768 bytes, the header \(K=104", True),  # K vs data size
    (H + 4, 63, r"x has shape \[1, 5, 64\], the header says K = 63", True),        # K vs x, same rows
    (H + 5, 1 << 30, "out of range", True),                                       # oversized N
    (H + 6, 0, "G 0", True),                                                      # group size 0
    (H + 2, 3, "bits 3", True),
    (H + 0, 0, "magic or version", True),
    (S + 1, 700, "the data section has 700 bytes, the header", True),              # short data
    (op_blob.PARAMS_WORD + 5, 3, "params: value 5 is 3; this op reads 5 values", True),
    # the static scale param without the static flag, and the static flag with a bad scale
    (op_blob.PARAMS_WORD + 4, 7, "params: param 4 is 7 without the static flag", True),
    (op_blob.PARAMS_WORD + 2, 8, r"params: a static activation scale 0 \(it must be finite", True),
    # the descriptor itself, read before the params name the layer
    (S + 1, 1 << 20, "the data section at offset 128 with 1048576 bytes", False),  # past the end
    (S + 2, 100, "the scales section at offset 100 .* not 64-byte aligned", False),
    (S + 2, 128, "the scales section at offset 128 .* overlaps", False),          # on the data
    (27, 5, "reserved word 27 is 5", False),
    (1, 2, "version 2; expected", False),                                          # blob version
])
def test_corrupted_blob_raises_from_the_side_channel(tmp_path, lowered_stack, word, value, message, named):
    bad = tmp_path / "bad.tflite"
    err = expect_blob_error(lowered_stack, bad, "d2", {word: value}, np.ones((1, 5, 40), np.float32),
                            message, "d2" if named else None)
    assert str(bad) in str(err)


def test_runtime_errors_name_the_file(tmp_path, lowered_stack):
    with pytest.raises(LiteRtError, match="missing.tflite"):
        LiteRtModel(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(LiteRtError, match="junk.tflite"):
        LiteRtModel(junk)
    with LiteRtModel(lowered_stack) as rt:
        with pytest.raises(ValueError, match="1 inputs expected"):
            rt.run([np.ones((1, 5, 40), np.float32)] * 2)
        with pytest.raises(ValueError, match="missing"):
            rt.run({"x": np.ones((1, 5, 40), np.float32)})


# ---- atomic writes and the shared schema ----------------------------------------------------

def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    monkeypatch.undo()
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_failed_lowering_keeps_the_existing_file(tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous model")
    model = dense_stack()
    with pytest.raises(LoweringError):
        lower_to_tflite(model, {"d9": None}, target, input_shape=(1, 2, 40))
    assert target.read_bytes() == b"previous model" and len(list(tmp_path.iterdir())) == 1


def test_op_schema_matches_the_c_header():
    text = (ROOT / "converters" / "litert" / "include" / "tfq" / "litert_op.h").read_text()
    defines = dict(re.findall(r"#define (TFQ_OP_\w+) (\S+)", text))
    enums = dict(re.findall(r"(TFQ_ACT_\w+) = (\d+)", text))
    assert defines["TFQ_OP_NAME"] == f'"{lowering.OP_NAME}"'
    assert int(defines["TFQ_OP_VERSION"]) == lowering.OP_VERSION
    assert int(defines["TFQ_OP_PARAMS_VERSION"]) == lowering.PARAMS_VERSION
    assert int(defines["TFQ_OP_PARAMS_COUNT"]) == lowering.PARAMS_COUNT
    assert int(defines["TFQ_OP_FLAG_BIAS"]) == lowering.FLAG_BIAS
    assert int(defines["TFQ_OP_FLAG_FLATTEN"]) == lowering.FLAG_FLATTEN
    assert int(defines["TFQ_OP_FLAG_FLOAT_ACT"]) == lowering.FLAG_FLOAT_ACT
    assert [int(defines[f"TFQ_OP_PARAM_{n}"]) for n in ("VERSION", "ACTIVATION", "FLAGS", "LAYER")] == [0, 1, 2, 3]
    conv = dict(re.findall(r"#define (TFQ_CONV_\w+) (\S+)", text))
    assert conv["TFQ_CONV_OP_NAME"] == f'"{lowering.CONV_OP_NAME}"'
    assert int(conv["TFQ_CONV_OP_VERSION"]) == lowering.CONV_OP_VERSION
    assert int(conv["TFQ_CONV_PARAMS_VERSION"]) == lowering.CONV_PARAMS_VERSION
    assert int(conv["TFQ_CONV_PARAMS_COUNT"]) == lowering.CONV_PARAMS_COUNT
    assert [int(conv[f"TFQ_CONV_PARAM_{n}"]) for n in ("KH", "KW", "SH", "SW")] == [4, 5, 6, 7]
    blob = dict(re.findall(r"#define (TFQ_BLOB_\w+) (\S+)", text))
    assert int(blob["TFQ_BLOB_MAGIC"], 16) == op_blob.MAGIC
    assert [int(blob[f"TFQ_BLOB_{n}"]) for n in ("VERSION", "WORDS", "HEADER", "PARAMS", "PARAMS_MAX", "SECTIONS",
                                                 "SECTION_COUNT", "ALIGN")] == [
        op_blob.VERSION, op_blob.WORDS, op_blob.HEADER_WORD, op_blob.PARAMS_WORD, op_blob.PARAMS_MAX,
        op_blob.SECTIONS_WORD, len(op_blob.SECTIONS), op_blob.ALIGN]
    assert {k: int(v) for k, v in enums.items()} == {
        "TFQ_ACT_NONE": lowering.ACT_NONE, "TFQ_ACT_RELU": lowering.ACT_RELU,
        "TFQ_ACT_RELU6": lowering.ACT_RELU6, "TFQ_ACT_RELU_N1_TO_1": lowering.ACT_RELU_N1_TO_1,
        "TFQ_ACT_SWISH": lowering.ACT_SWISH, "TFQ_ACT_COUNT": 5}


# ---- packed depthwise convolutions (TFQ_DEPTHWISE_CONV_1D) ------------------------------------

DW_CASES = {  # id: (taps, padding, strides, dilation, BatchNorm after, spec)
    "15-valid-w2-asym": (15, "valid", 1, 1, False, SPECS[1]),
    "32-same-w4-bn": (32, "same", 1, 1, True, SPECS[0]),
    "7-valid-w2-bn": (7, "valid", 1, 1, True, SPECS[1]),
    "5-valid-dilated-w4-asym": (5, "valid", 1, 2, False, SPECS[2]),
    "4-same-stride2-w4": (4, "same", 2, 1, False, SPECS[0]),
}


def depthwise_model(taps, padding, strides, dilation, bn, spec, channels=24, frames=29, seed=0):
    """A DepthwiseConv1D (optionally followed by a BatchNorm the converter folds into it) with
    quantized taps: (model with the dequantized taps, {key: QuantizedWeight})."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((frames, channels), batch_size=1, name="features")
    y = keras.layers.DepthwiseConv1D(taps, strides=strides, padding=padding, dilation_rate=dilation,
                                     name="dw")(inp)
    if bn:
        y = keras.layers.BatchNormalization(name="bn")(y)
    model = keras.Model(inp, keras.layers.Activation("relu", name="relu")(y))
    kernel = rng.normal(size=(taps, channels, 1)).astype(np.float32)
    qw = quantize_weight(kernel.reshape(taps, channels), spec)
    model.get_layer("dw").set_weights([qw.dequantize().reshape(kernel.shape),
                                       rng.normal(size=channels).astype(np.float32)])
    if bn:
        bn_layer = model.get_layer("bn")
        bn_layer.set_weights([rng.uniform(0.5, 2, channels).astype(np.float32) * rng.choice([-1, 1], channels),
                              rng.normal(size=channels).astype(np.float32),
                              rng.normal(size=channels).astype(np.float32),
                              rng.uniform(0.5, 3, channels).astype(np.float32)])
    return model, {"dw/depthwise_kernel": qw}


@pytest.mark.parametrize("case", list(DW_CASES))
def test_quantized_depthwise_conv_lowers_to_the_packed_op(tmp_path, case):
    """Every quantized DepthwiseConv1D becomes TFQ_DEPTHWISE_CONV_1D with packed taps: no float
    DEPTHWISE_CONV_2D left, and the output equals the Keras layer with the dequantized taps
    within float rounding (a folded BatchNorm goes into float32 scales: one rounding less)."""
    from ai_edge_litert import schema_py_generated as schema
    model, dw = depthwise_model(*DW_CASES[case])
    path = tmp_path / "dw.tflite"
    report = lower_to_tflite(model, {}, path, depthwise=dw)
    info = report["layers"]["dw/depthwise_kernel"]
    assert info["op"] == lowering.DW_OP_NAME and info["ops"] == 1
    assert info["folded_channel_factors"] == DW_CASES[case][4]
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    used = [m.operatorCodes[op.opcodeIndex] for op in m.subgraphs[0].operators]
    assert schema.BuiltinOperator.DEPTHWISE_CONV_2D not in {max(c.builtinCode, c.deprecatedBuiltinCode) for c in used}
    assert sum(c.customCode == lowering.DW_OP_NAME.encode() for c in used) == 1
    x = np.random.default_rng(1).normal(size=(1, 29, 24)).astype(np.float32)
    with LiteRtModel(path) as rt:
        y = rt.run([x])[0]
    expect = model(x, training=False).numpy()
    assert y.shape == expect.shape
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-5 * np.abs(expect).max())
    assert (y > 0).any()


@pytest.mark.parametrize("channels", [45, 64])
def test_depthwise_sums_each_channel_in_tap_order(tmp_path, channels):
    """The op walks channels in blocks of 32, 8 and 1 (45 = 32 + 8 + 5) with its taps blocked
    to match: each output is 0 + x*tap 0 + x*tap 1 + ... + bias in float32, bit for bit the
    plain loop over the dequantized taps, whatever block a channel falls in."""
    model, dw = depthwise_model(15, "valid", 1, 1, False, SPECS[1], channels=channels)
    path = tmp_path / "dw.tflite"
    lower_to_tflite(model, {}, path, depthwise=dw)
    x = np.random.default_rng(2).normal(size=(1, 29, channels)).astype(np.float32)
    with LiteRtModel(path) as rt:
        y = rt.run([x])[0]
    taps = dw["dw/depthwise_kernel"].dequantize().astype(np.float32)  # [taps, channels]
    bias = model.get_layer("dw").get_weights()[1].astype(np.float32)
    acc = np.zeros((29 - 15 + 1, channels), np.float32)
    for j in range(15):
        acc = (acc + x[0, j:j + acc.shape[0]] * taps[j]).astype(np.float32)
    expect = np.maximum(acc + bias, 0)[None]
    assert np.array_equal(y, expect)


def test_depthwise_taps_that_match_no_op_are_an_error(tmp_path):
    model, dw = depthwise_model(*DW_CASES["15-valid-w2-asym"])
    other = quantize_weight(np.ones((15, 24), np.float32), SPECS[1])
    with pytest.raises(LoweringError, match="layer 'dw'.*DEPTHWISE_CONV_2D"):
        lower_to_tflite(model, {}, tmp_path / "x.tflite", depthwise={"dw/depthwise_kernel": other})
    assert list(tmp_path.iterdir()) == []


P = op_blob.PARAMS_WORD


@pytest.mark.parametrize("what,words,message", [
    ("stride 0", {P + 4: 0}, "stride 0"),
    ("width", {P + 6: 2}, r"W_out"),
    ("version", {P + 0: 9}, "version 9"),
    ("taps", {H + 4: 40}, r"the data section has 96 bytes, the header \(K=40, N=24, G=15, 2-bit\) needs 240"),
])
def test_corrupted_depthwise_params_raise_from_the_side_channel(tmp_path, what, words, message):
    model, dw = depthwise_model(*DW_CASES["15-valid-w2-asym"])
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    lower_to_tflite(model, {}, good, depthwise=dw)
    expect_blob_error(good, bad, "dw", words, np.ones((1, 29, 24), np.float32), message,
                      None if what == "version" else "dw")  # the layer index is in the params


def depthwise_pointwise_model(channels=24, out=16, frames=29, seed=0):
    """DepthwiseConv1D (valid, 15 taps), swish, Dense: a Conformer convolution module's tail,
    both layers quantized: (model, dense {name: QuantizedWeight}, depthwise {key: ...})."""
    rng = np.random.default_rng(seed)
    tf.random.set_seed(seed)
    inp = keras.Input((frames, channels), batch_size=1, name="features")
    y = keras.layers.DepthwiseConv1D(15, padding="valid", name="dw")(inp)
    y = keras.layers.Activation("swish", name="swish")(y)
    model = keras.Model(inp, keras.layers.Dense(out, name="pw")(y))
    qw = quantize_weight(rng.normal(size=(15, channels)).astype(np.float32), SPECS[1])
    model.get_layer("dw").set_weights([qw.dequantize().reshape(15, channels, 1),
                                       rng.normal(size=channels).astype(np.float32)])
    return model, quantize_layers(model, ["pw"], SPECS[0]), {"dw/depthwise_kernel": qw}


def test_depthwise_then_pointwise_runs_as_one_op(tmp_path):
    """Depthwise, swish, Dense: one TFQ_DEPTHWISE_CONV_1D call with both blobs and the op's own
    swish; the same numbers as two calls with XNNPACK's swish between them, to float rounding."""
    model, q, dw = depthwise_pointwise_model()
    fused, apart = tmp_path / "f.tflite", tmp_path / "a.tflite"
    report = lower_to_tflite(model, q, fused, depthwise=dw)
    lower_to_tflite(model, q, apart, depthwise=dw, fuse_depthwise_pointwise=False)
    assert report["layers"]["dw/depthwise_kernel"]["chained_with"] == "pw"
    assert report["layers"]["pw"]["chained_with"] == "dw/depthwise_kernel"
    x = np.random.default_rng(6).normal(size=(1, 29, 24)).astype(np.float32)
    assert check_one_call_as_two(model, q, fused, apart, x).shape == (1, 15, 16)


@pytest.mark.parametrize("word,value,message,named", [
    (op_blob.HEADER_WORD + 4, 23, r"pointwise layer: K = 23, but the depthwise layer \(#1\) has C = 24", "pw"),
    (op_blob.PARAMS_WORD + 2, lowering.FLAG_FLATTEN, "pointwise layer params: unknown activation 0 or flags 2", "pw"),
    # a params version it does not know: the layer index in them is not read, the call's is named
    (op_blob.PARAMS_WORD + 0, 7, "pointwise layer params: version 7", "dw"),
])
def test_chained_depthwise_that_does_not_fit_raises_by_name(tmp_path, word, value, message, named):
    model, q, dw = depthwise_pointwise_model()
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    lower_to_tflite(model, q, good, depthwise=dw)
    expect_blob_error(good, bad, "pw", {word: value}, np.ones((1, 29, 24), np.float32), message, named)


def _conv_file(tmp_path) -> Path:
    inp = keras.Input((17, 40, 4), batch_size=1, name="features")
    model = keras.Model(inp, keras.layers.Conv2D(8, 3, strides=2, name="conv")(inp))
    spec = WeightQuantSpec(bits=4)
    qw = quantize_weight(model.get_layer("conv").get_weights()[0].reshape(-1, 8), spec)
    good = tmp_path / "conv.tflite"
    lower_to_tflite(model, {"conv": qw}, good, float_activations=["conv"])
    return good


@pytest.mark.parametrize("what,message", [
    ("kernel", "kernel 3x2, strides 2x2 with a geometry tensor of rank 4 \\[3, 3, 2, 2\\]"),
    ("version", "version 9"),
    ("geometry", "geometry (tensor )?of rank 3"),
])
def test_corrupted_conv_params_raise_from_the_side_channel(tmp_path, what, message):
    """TFQ_CONV_2D with params that disagree with its geometry input, a wrong params version or
    a geometry tensor of the wrong rank: a TfqOpError saying so, never a crash."""
    from tensorflow.lite.tools import flatbuffer_utils
    good, bad = _conv_file(tmp_path), tmp_path / "bad.tflite"
    if what == "geometry":
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(good.read_bytes()))
        t = next(t for t in m.subgraphs[0].tensors if t.name.decode() == "conv/tfq_conv_geometry")
        t.shape = np.array([3, 3, 4], np.int32)
        m.buffers[t.buffer].data = np.zeros(36, np.uint8)
        bad.write_bytes(lowering._serialize_external(m))
    else:
        edit_blob(good, bad, "conv", {P + 5: 2} if what == "kernel" else {P: 9})
    x = np.ones((1, 17, 40, 4), np.float32)
    with LiteRtModel(bad) as rt:
        with pytest.raises(TfqOpError, match=message):
            rt.run([x])
    with LiteRtModel(good) as rt:
        assert np.isfinite(rt.run([x])[0]).all()
