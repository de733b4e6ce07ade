"""quantize(): tfmot configs for every layer type, PTQ calibration, zero-shot inputs, QAT steps,
quantized checkpoints; checked against the NumPy numerics."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfq_asr.errors import UserError
from tfq_asr.models import AsrModel, build_model, get_config, load_model, output_length, save_model
from tfq_asr.quant.apply import float_twin, quantize, quantized_layers, wrappers
from tfq_asr.quant.calibration import output_error_alpha
from tfq_asr.quant.numerics import (WeightQuantSpec, clip_factors, fake_quant_weight_np, int_matmul_reference,
                                    quantize_activation_dynamic)
from tfq_asr.quant.policy import from_name


def every_layer_model(seed=0):
    """One of each supported layer type, plus unsupported ones that hold weights."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, 12), name="features")
    x = keras.layers.Dense(16, activation="swish", name="dense")(inp)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Conv1D(16, 3, padding="same", name="conv1d")(x)
    x = keras.layers.DepthwiseConv1D(5, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    y = keras.layers.Reshape((-1, 8, 1), name="expand")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv2d")(y)
    y = keras.layers.Reshape((-1, 32), name="flatten")(y)
    out = keras.layers.Dense(6, name="head")(y)
    return keras.Model(inp, out)


def features(t=20, f=12, seed=0):
    return np.random.default_rng(seed).normal(size=(1, t, f)).astype(np.float32)


def tiny_conformer():
    keras.utils.set_random_seed(1)
    cfg = dataclasses.replace(get_config("conformer-xs"), num_blocks=1, d_model=32, num_heads=2,
                              subsample_channels=8)
    return cfg, build_model(cfg)


def test_every_supported_layer_is_wrapped_and_nothing_else():
    m = every_layer_model()
    q = quantize(m, "w4")
    wrapped = sorted(w.layer.name for w in wrappers(q))
    assert wrapped == ["conv1d", "conv2d", "dense", "depthwise", "head", "lstm"]
    roles = sorted((ql.layer, ql.role) for ql in quantized_layers(q))
    assert ("lstm", "kernel") in roles and ("lstm", "recurrent_kernel") in roles
    assert q(features()).shape == m(features()).shape


def test_input_model_untouched_and_fp32_is_identity():
    m = every_layer_model()
    before = [w.copy() for w in m.get_weights()]
    q = quantize(m, "w2-sc64-asym-clipl2")
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    q32 = quantize(m, "fp32")
    assert not wrappers(q32)
    np.testing.assert_array_equal(q32(features()).numpy(), m(features()).numpy())
    assert not np.array_equal(q(features()).numpy(), m(features()).numpy())


def test_dense_computes_the_integer_kernel_to_float_rounding():
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, 40))
    out = keras.layers.Dense(24, name="fc")(inp)
    m = keras.Model(inp, out)
    for policy in ("w4", "w2-sc16-asym-f16", "w8-pt"):
        q = quantize(m, policy)
        (ql,) = quantized_layers(q)
        x = features(9, 40, seed=5)
        got = q(x).numpy()[0]
        ref = int_matmul_reference(x[0], ql.weight, ql.bias)
        # Same quantized operands; Keras sums in another order: the bound is float rounding of
        # a K = 40 dot product of values of size |y|.
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        qa, sa = quantize_activation_dynamic(x[0])
        manual = (qa * sa) @ ql.weight.dequantize() + ql.bias
        np.testing.assert_allclose(got, manual, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel,strides", [((3, 3), (2, 2)), ((2, 5), (1, 3))])
def test_convq8_conv2d_computes_int8_patches(tmp_path, kernel, strides):
    """-convq8: a VALID Conv2D quantizes each output position's patch (kh*kw*C inputs, (i, j, c)
    order) to int8 as a Dense row, times the integer kernel; TFQ_CONV_2D's int8 path computes
    the same to float rounding; without the suffix, or with fewer than 32 inputs per patch, the
    convolution keeps float inputs."""
    from tfq_asr.convert.export import convert
    from tfq_asr.runtime import load
    keras.utils.set_random_seed(4)
    inp = keras.Input((13, 21, 4), batch_size=1)
    out = keras.layers.Conv2D(8, kernel, strides=strides, activation="relu", name="conv")(inp)
    small = keras.layers.Conv2D(2, 2, name="small")(inp)  # 16 inputs per patch: float inputs
    m = keras.Model(inp, [out, small])
    x = np.random.default_rng(6).normal(size=(1, 13, 21, 4)).astype(np.float32)
    q = quantize(m, "w4-sc16-asym-f16-convq8")
    modes = {ql.layer: ql.activation for ql in quantized_layers(q)}
    assert modes == {"conv": "dynamic", "small": "none"}
    assert {ql.activation for ql in quantized_layers(quantize(m, "w4-sc16-asym-f16"))} == {"none"}
    (ql,) = [ql for ql in quantized_layers(q) if ql.layer == "conv"]
    kh, kw = kernel
    sh, sw = strides
    ho, wo = (13 - kh) // sh + 1, (21 - kw) // sw + 1
    patches = np.stack([x[0, i * sh:i * sh + kh, j * sw:j * sw + kw, :].reshape(-1)
                        for i in range(ho) for j in range(wo)])
    qa, sa = quantize_activation_dynamic(patches)
    manual = np.maximum((qa * sa) @ ql.weight.dequantize() + ql.bias, 0).reshape(ho, wo, 8)
    got = q(x)[0].numpy()[0]
    np.testing.assert_allclose(got, manual, rtol=1e-5, atol=1e-5 * np.abs(manual).max())
    rep = convert(q, tmp_path / "c.tflite")
    assert rep["layers"]["conv"]["op"] == "TFQ_CONV_2D" and rep["layers"]["conv"]["activation_mode"] == "dynamic"
    assert rep["layers"]["small"]["activation_mode"] == "none"
    with load(tmp_path / "c.tflite") as rt:
        lowered = [o for o in rt.run(x) if o.shape[-1] == 8][0][0]
    np.testing.assert_allclose(lowered, got, rtol=1e-5, atol=1e-5 * np.abs(got).max())
    with tf.GradientTape() as tape:  # QAT: the straight-through gradient reaches the kernel
        loss = sum(tf.reduce_sum(o) for o in q(x, training=True))
    grads = tape.gradient(loss, q.trainable_weights)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_with_conv_activations_keeps_the_integer_weights():
    """A quantized model's convolutions switched to int8 patches afterwards (a QAT checkpoint,
    tools/convert.py --int8-convs): every integer weight, scale and zero point stays the same."""
    from tfq_asr.quant.apply import policy_of, with_conv_activations
    keras.utils.set_random_seed(8)
    inp = keras.Input((9, 11, 4), batch_size=1)
    y = keras.layers.Conv2D(6, 3, strides=2, name="conv")(inp)
    m = keras.Model(inp, keras.layers.Dense(5, name="fc")(y))
    q = quantize(m, "w2-sc16-asym-clipl2-f16")
    q8 = with_conv_activations(q, "dynamic")
    assert policy_of(q8).name == "w2-sc16-asym-clipl2-f16-convq8" and policy_of(q).conv_activations == "none"
    before = {ql.layer: ql for ql in quantized_layers(q)}
    for ql in quantized_layers(q8):
        old = before[ql.layer]
        assert np.array_equal(ql.weight.q, old.weight.q) and np.array_equal(ql.weight.scales, old.weight.scales)
        assert np.array_equal(ql.weight.zero_points, old.weight.zero_points)
        assert ql.activation == ("dynamic" if ql.layer in ("conv", "fc") else "none")
    assert before["conv"].activation == "none"
    x = np.random.default_rng(2).normal(size=(1, 9, 11, 4)).astype(np.float32)
    assert not np.array_equal(q(x).numpy(), q8(x).numpy())  # the patches are quantized now
    assert with_conv_activations(q8, "none") is not q8 and policy_of(with_conv_activations(q8, "none")).name == \
        "w2-sc16-asym-clipl2-f16"


def test_asr_model_with_input_mode():
    """AsrModel.with_input_mode (tools/convert.py --int8-convs / --int8-lstm, make demo's int8
    convolutions): a new checkpoint whose policy says so, the rest of its metadata kept; the same
    mode returns the model itself; a float model or an unknown kind is refused by name."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((9, 11, 4), batch_size=1)
    y = keras.layers.Conv2D(6, 3, strides=2, name="conv")(inp)
    q = quantize(keras.Model(inp, keras.layers.Dense(5, name="fc")(y)), "w4")
    src = AsrModel("tiny", object(), q, {"policy": {"name": "w4"}, "method": "qat"})
    q8 = src.with_input_mode("conv_activations", "dynamic")
    assert q8 is not src and q8.name == "tiny" and q8.config is src.config and q8.quantization["method"] == "qat"
    assert from_name("w4-convq8") == from_name(q8.quantization["policy"]["name"])
    assert q8.with_input_mode("conv_activations", "dynamic") is q8
    with pytest.raises(UserError, match="tiny: unknown input kind 'dense'"):
        src.with_input_mode("dense", "dynamic")
    with pytest.raises(UserError, match="tiny is not a quantized checkpoint"):
        AsrModel("tiny", object(), q).with_input_mode("conv_activations", "dynamic")


def _lstm_with_states(unroll, steps=6, features=12, units=16):
    x, h, c = keras.Input((steps, features)), keras.Input((units,)), keras.Input((units,))
    y, h2, c2 = keras.layers.LSTM(units, return_sequences=True, return_state=True, unroll=unroll,
                                  name="lstm0")(x, initial_state=[h, c])
    return keras.Model([x, h, c], [y, h2, c2])


def test_lstmq8_quantizes_each_steps_input_and_state():
    """-lstmq8: x_t and h_{t-1} are quantized to int8 per row before the input and recurrent
    products (what the kernels' int8 path computes), rolled (training, the layer would take the
    fused path) and unrolled (the streaming step) alike; the quantizers stay off the rest of the
    cell, and QAT's straight-through gradient reaches both kernels. Without the suffix the
    LSTM keeps float activations."""
    from tfq_asr.quant.apply import policy_of, with_lstm_activations
    keras.utils.set_random_seed(3)
    rolled, unrolled = _lstm_with_states(False), _lstm_with_states(True)
    unrolled.set_weights(rolled.get_weights())
    q, qu = quantize(rolled, "w4-sc4-lstmq8"), quantize(unrolled, "w4-sc4-lstmq8")
    assert {ql.activation for ql in quantized_layers(q)} == {"dynamic"}
    rng = np.random.default_rng(4)
    inputs = [rng.normal(0, 1.5, s).astype(np.float32) for s in ((2, 6, 12), (2, 16), (2, 16))]
    w = {ql.role: ql.weight.dequantize() for ql in quantized_layers(q)}
    bias = rolled.get_layer("lstm0").cell.bias.numpy()

    def sig(v):
        return 1 / (1 + np.exp(-v))

    def deq8(v):
        qa, sa = quantize_activation_dynamic(v)
        return qa * sa

    x, h, c = inputs
    ys = []
    for t in range(6):
        z = deq8(x[:, t]) @ w["kernel"] + deq8(h) @ w["recurrent_kernel"] + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        ys.append(h)
    manual = np.stack(ys, 1)
    for model in (q, qu):
        y, _, c_out = (t.numpy() for t in model(inputs))
        np.testing.assert_allclose(y, manual, rtol=0, atol=1e-5)
        np.testing.assert_allclose(c_out, c, rtol=0, atol=1e-5)
    weight_only = quantize(rolled, "w4-sc4")
    assert {ql.activation for ql in quantized_layers(weight_only)} == {"none"}
    assert np.abs(weight_only(inputs)[0].numpy() - manual).max() > 1e-4  # float activations: no int8 rounding
    assert policy_of(with_lstm_activations(weight_only, "dynamic")).name == "w4-sc4-lstmq8"
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(inputs, training=True)[0])
    grads = tape.gradient(loss, q.trainable_weights)
    assert grads and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_quantized_kernels_equal_numpy_fake_quant_bit_for_bit():
    m = every_layer_model()
    q = quantize(m, "w4-sc4-asym-clipl2-f16")
    for w in wrappers(q):
        for weight, quantizer, qvars in w._weight_vars:
            got = quantizer(weight, False, qvars).numpy()
            k = int(np.prod(weight.shape[:-1])) if quantizer.role != "depthwise_kernel" else weight.shape[0]
            w2 = np.reshape(weight.numpy(), (k, -1))
            want = fake_quant_weight_np(w2, quantizer.spec, qvars["alpha"].numpy())
            np.testing.assert_array_equal(got.reshape(want.shape), want)
            np.testing.assert_array_equal(qvars["alpha"].numpy(), clip_factors(w2, quantizer.spec))


def test_weight_only_policy_equals_its_float_twin():
    m = every_layer_model()
    q = quantize(m, "w4-wo")
    twin = float_twin(q)
    x = features()
    np.testing.assert_allclose(q(x).numpy(), twin(x).numpy(), rtol=1e-5, atol=1e-5)


def test_overrides_keep_layers_float_and_lstm_roles_differ():
    m = every_layer_model()
    policy = from_name("w4").with_override("head", None).with_override("lstm/recurrent_kernel", "w8")
    q = quantize(m, policy)
    names = {w.layer.name for w in wrappers(q)}
    assert "head" not in names
    specs = {(ql.layer, ql.role): ql.weight.spec.bits for ql in quantized_layers(q)}
    assert specs[("lstm", "kernel")] == 4 and specs[("lstm", "recurrent_kernel")] == 8


def test_bad_input_errors_name_the_problem():
    m = every_layer_model()
    with pytest.raises(UserError, match="layer ln .*LayerNormalization.*no quantization config"):
        quantize(m, from_name("w4").with_override("ln", "w4"))
    with pytest.raises(UserError, match="unknown suffix"):
        quantize(m, "w4-sc64-bogus")
    with pytest.raises(UserError, match="weight bits must be one of"):
        quantize(m, "w3")
    with pytest.raises(UserError, match="calibration set is empty"):
        quantize(m, "w4", calibration=[])
    one = np.zeros([d or 5 for d in m.inputs[0].shape[1:]], np.float32)
    with pytest.raises(UserError, match="calibration is one array.*pass a list"):
        quantize(m, "w4", calibration=one)  # its rows would have been taken as the inputs
    bad = every_layer_model()
    k = bad.get_layer("dense").kernel
    k.assign(np.where(np.arange(k.shape[1]) == 0, np.nan, k.numpy()))
    with pytest.raises(UserError, match="layer dense: kernel contains NaN"):
        quantize(bad, "w4")


def test_static_calibration_records_float_input_range():
    m = every_layer_model()
    data = [features(15, seed=s)[0] for s in range(3)]
    q = quantize(m, "w8-static", calibration=data, data_aware_clipping=False)
    probe = keras.Model(m.inputs, m.get_layer("head").input)
    want = max(float(np.abs(probe(d[None]).numpy()).max()) for d in data)
    (head,) = [w for w in wrappers(q) if w.layer.name == "head"]
    assert float(head.input_max.numpy()) == pytest.approx(want, rel=1e-6)
    uncalibrated = quantize(m, "w8-static")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not calibrated"):
        uncalibrated(features())


def test_data_aware_clipping_never_increases_output_error():
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(64, 16)).astype(np.float32)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    for spec in (WeightQuantSpec(bits=2, granularity="group", group_size=16),
                 WeightQuantSpec(bits=4, symmetric=False, clip="l2")):
        start = clip_factors(w, spec)
        alpha = output_error_alpha(w, x, spec, start)

        def err(a):
            d = x @ (w - fake_quant_weight_np(w, spec, a))
            return (d * d).sum(axis=0)
        assert np.all(err(alpha) <= err(start) + 1e-6)
        assert err(alpha).sum() < err(start).sum()


def test_zero_shot_inputs_match_batch_norm_statistics_better_than_noise():
    from tfq_asr.quant.zero_shot import synthesize
    cfg, m = tiny_conformer()
    bn = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    probe = keras.Model(m.inputs, bn.input)
    # Stored statistics of "real" inputs: smooth trajectories, unlike the Gaussian start.
    real = np.cumsum(np.random.default_rng(7).normal(size=(8, 64, cfg.num_mels)), axis=1) * 0.3 + 1.0
    o = probe(real.astype(np.float32)).numpy().reshape(-1, bn.moving_mean.shape[0])
    bn.moving_mean.assign(o.mean(0))
    bn.moving_variance.assign(o.var(0))

    def mismatch(xs):
        o = probe(np.stack(xs)).numpy().reshape(-1, bn.moving_mean.shape[0])
        return float(np.mean((o.mean(0) - bn.moving_mean.numpy()) ** 2)
                     + np.mean((o.std(0) - np.sqrt(bn.moving_variance.numpy())) ** 2))
    start = synthesize(m, num=4, frames=64, steps=0)
    done = synthesize(m, num=4, frames=64, steps=60, lr=0.05)
    assert len(done) == 4 and done[0].shape == (64, cfg.num_mels)
    assert mismatch(done) < 0.05 * mismatch(start)
    again = synthesize(m, num=4, frames=64, steps=0)
    np.testing.assert_array_equal(start[0], again[0])
    q = quantize(m, "w8-static", calibration="synthetic")
    assert all(float(w.input_max.numpy()) > 0 for w in wrappers(q) if w.quantize_config.activation == "static")


@pytest.mark.parametrize("policy", ["w2-sc4-clipl2", "w2-sc4-clipl2-lstmq8"])
def test_qat_steps_train_every_layer_type_and_keep_clipping_fixed(policy):
    """Keras fit (a tf.function; the rolled LSTM's while loop, through the int8 cell with
    -lstmq8) trains every quantized kernel and leaves the clipping factors as they were."""
    from tfq_asr.quant.qat import CtcFitModel
    m = every_layer_model()
    q = quantize(m, policy)
    lstm_modes = {ql.activation for ql in quantized_layers(q) if ql.layer == "lstm"}
    assert lstm_modes == {"dynamic" if policy.endswith("lstmq8") else "none"}
    alphas = [v.numpy().copy() for w in wrappers(q) for v in w.weights if "_clip" in v.name]
    kernels = {w.layer.name: w._weight_vars[0][0].numpy().copy() for w in wrappers(q)}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 20, 12)).astype(np.float32)
    y = rng.integers(1, 6, size=(4, 5)).astype(np.int32)
    ds = tf.data.Dataset.from_tensors((x, y, np.full(4, 20, np.int32), np.full(4, 5, np.int32))).repeat(3)
    fit = CtcFitModel(q, lambda n: n)
    fit.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = fit.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    for name, before in kernels.items():
        after = q.get_layer(f"quant_{name}")._weight_vars[0][0].numpy()
        assert not np.array_equal(before, after), f"{name} did not train"
    after_alphas = [v.numpy() for w in wrappers(q) for v in w.weights if "_clip" in v.name]
    for a, b in zip(alphas, after_alphas):
        np.testing.assert_array_equal(a, b)


def test_qat_finetune_on_tiny_conformer(tiny_corpus):
    from tfq_asr.features import load_feature_set
    from tfq_asr.quant.qat import qat_finetune
    cfg, m = tiny_conformer()
    corpus, _ = tiny_corpus
    train = load_feature_set(corpus / "train.tsv", corpus / "cache", progress=False)
    q = quantize(m, "w4-sc16-f16")
    hist = qat_finetune(q, lambda n: output_length(n, cfg), train, steps=3, lr=1e-3, batch_frames=2000,
                        warmup=1, verbose=0)
    assert len(hist.history["loss"]) == 1 and np.isfinite(hist.history["loss"][0])


def test_quantized_checkpoint_round_trip(tmp_path):
    cfg, m = tiny_conformer()
    q = quantize(m, "w2-sc16-asym-clipl1-f16-static", calibration=[features(40, cfg.num_mels)[0]])
    policy = q._tfq_policy
    save_model(AsrModel("tiny-q", cfg, q, quantization={"policy": policy.to_dict(), "method": "ptq"}),
               tmp_path / "q")
    back = load_model(tmp_path / "q")
    assert back.quantization["method"] == "ptq"
    x = features(40, cfg.num_mels, seed=2)
    np.testing.assert_array_equal(back.keras_model(x).numpy(), q(x).numpy())
    for a, b in zip(quantized_layers(q), quantized_layers(back.keras_model)):
        np.testing.assert_array_equal(a.weight.q, b.weight.q)
        np.testing.assert_array_equal(a.weight.scales, b.weight.scales)
    # a damaged weights.npz (bad CRC, truncated, not a zip) is a UserError naming the file,
    # not a zipfile traceback; the folder is left as it was
    good = (tmp_path / "q" / "weights.npz").read_bytes()
    i = good.index(b".npy") + 200  # inside the first stored array's data
    damaged = {"crc": good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:],
               "truncated": good[:len(good) // 2], "not-zip": b"hello"}
    for kind, data in damaged.items():
        (tmp_path / "q" / "weights.npz").write_bytes(data)
        with pytest.raises(UserError, match=r"cannot load weights .*weights\.npz"):
            load_model(tmp_path / "q")
        assert (tmp_path / "q" / "weights.npz").read_bytes() == data, kind
    # a folder that is not a model folder is never replaced (its files would be deleted); an
    # empty one or a model folder is written
    user = tmp_path / "documents"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    for target in (user, user / "notes.txt"):
        with pytest.raises(UserError, match="not a model folder"):
            save_model(back, target)
    assert (user / "notes.txt").read_text() == "precious" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    save_model(back, tmp_path / "empty")
    save_model(back, tmp_path / "empty")  # a model folder: replaced
    assert load_model(tmp_path / "empty").quantization["method"] == "ptq"


def test_mixed_precision_search_fits_the_budget():
    from tfq_asr.quant.mixed import search
    from tfq_asr.quant.size import size_report
    m = every_layer_model()
    inputs = [features(16, seed=s) [0] for s in range(2)]
    all8 = size_report(m, from_name("w8-sc4"))["total_bytes"]
    all2 = size_report(m, from_name("w2-sc4"))["total_bytes"]
    budget = (all8 + all2) // 2
    policy, choices = search(m, budget, inputs, base="w4-sc4")
    assert size_report(m, policy)["total_bytes"] <= budget
    bits = {(c.layer, c.role): c.bits for c in choices}
    assert len(bits) == 7 and len(set(bits.values())) >= 2  # a budget halfway mixes widths
    assert all(c.error >= 0 for c in choices)
    assert quantize(m, policy)(features()).shape == m(features()).shape
    with pytest.raises(UserError, match="below the smallest model"):
        search(m, all2 - 1, inputs, base="w4-sc4")
    with pytest.raises(UserError, match="below the smallest model"):  # checked before measuring anything
        search(m, all2 - 1, [np.full((16, 80), np.nan, np.float32)], base="w4-sc4")
