"""Packed kernels on the float-activation path (TFQ_OP_FLAG_FLOAT_ACT, tfq_linear_f32): LSTM
kernels of the unrolled streaming step and weight-only (`-wo`) Dense layers.

Bounds.  On this path nothing is rounded to int8: the op computes SUM_g s_w * SUM_k x*(q-zp)
in float32 (SIMD kernels may fuse multiply-adds and sum in another order) where Keras
multiplies x by the dequantized kernel, and the gates' LOGISTIC/TANH run in XNNPACK.  So
the file equals the Keras quantized model to float rounding: LSTM states and logits within
2e-5 of their largest magnitude per chunk (measured over 3 chunks of a 2-layer, 24-unit step:
states 2.7e-6, about 20 ulps of c after 12 steps; logits 6e-7), a weight-only Dense stack
within 1e-5 (measured 3.5e-7).  Under the checkpoint policy `w4` the CTC head keeps int8-dynamic
inputs: a last-bit difference in h may flip one activation's int8 rounding (a step of
max|h|/127), so there the states carry the 2e-5 bound and the logits one of a few such steps
(5e-2; measured 1.1e-6, no flip).

With `-lstmq8` the same LSTM ops take the int8 path instead: each quantizes its rows (x_t,
h_{t-1}) to int8 per row as the Keras cell does (quant/configs.py), so a last-bit difference
may flip one rounding there too, and the recurrence carries it on: states and logits within
5e-2 of their largest magnitude (measured 1.8e-6 and 2.4e-7 relative, no flip).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfq_asr.convert.export import convert, export_streaming, lowering_plan
from tfq_asr.convert.lowering import LoweringError, lower_to_tflite
from tfq_asr.models import AsrModel, build_model, get_config
from tfq_asr.models.streaming import build_step_model, transfer_weights
from tfq_asr.quant.apply import float_twin, quantize, quantized_layers
from tfq_asr.runtime.litert import LiteRtModel
from tfq_asr.streaming import Recognizer

ROOT = Path(__file__).resolve().parent.parent
CFG = dataclasses.replace(get_config("lstm-xs"), num_layers=2, units=24)
STEPS = 4
KERNELS = {f"lstm{i}/{r}" for i in range(2) for r in ("kernel", "recurrent_kernel")}
STATE_BOUND = LOGIT_BOUND = 2e-5  # of the largest magnitude; float rounding only
LSTMQ8_BOUND = 0.05  # -lstmq8: a few flipped int8 roundings of x_t or h_{t-1} (module docstring)


pytestmark = pytest.mark.usefixtures("native_op_library")


def _lstm(seed=0):
    keras.utils.set_random_seed(seed)
    km = build_model(CFG)
    rng = np.random.default_rng(seed)
    for w in km.weights:  # larger than the initialisers, so gates saturate and states grow
        if "moving_variance" in w.name or "inv_std" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        else:
            w.assign(rng.normal(0, 0.3, w.shape))
    return AsrModel("tiny-lstm", CFG, km)


@pytest.fixture(scope="module")
def lstm_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("lstm")
    m = _lstm()
    out = {}
    for policy in ("w4", "w4-wo", "w4-lstmq8", None):
        path = root / f"{policy or 'fp32'}.tflite"
        out[policy] = (path, export_streaming(m, path, policy=policy, lstm_steps=STEPS))
    return m, out


def _keras_step(m, policy):
    q = quantize(m.keras_model, policy)
    step = quantize(build_step_model(CFG, STEPS), policy)
    transfer_weights(q, step)
    return step


def _compare_steps(m, path, policy, chunks=3, seed=1):
    """Per chunk: (max |logits diff|, max |logits|, max |state diff|, max |state|)."""
    step = _keras_step(m, policy)
    run = tf.function(lambda *a: step(list(a), training=False))
    r = Recognizer(path)
    try:
        names = [s["input"] for s in r.info["states"]]
        assert names == [n for n in step.input_names[1:]]
        feats = np.random.default_rng(seed).normal(0, 2, (chunks * r.chunk_frames, CFG.num_mels)).astype(np.float32)
        state = r.initial_state()
        kstate = [state[n] for n in names]
        rows = []
        for i in range(0, len(feats), r.chunk_frames):
            chunk = feats[i:i + r.chunk_frames]
            logits, state = r.step(chunk, state)
            res = run(chunk[None], *kstate)
            want, kstate = res[0].numpy()[0], [t.numpy() for t in res[1:]]
            got_s = np.concatenate([state[n].ravel() for n in names])
            want_s = np.concatenate([s.ravel() for s in kstate])
            rows.append((np.abs(logits - want).max(), np.abs(want).max(),
                         np.abs(got_s - want_s).max(), np.abs(want_s).max()))
            kstate = [state[n] for n in names]  # continue both from the file's state
        return rows
    finally:
        r.close()


def test_lstm_step_kernels_are_packed_on_the_float_path(lstm_exports):
    m, out = lstm_exports
    for policy in ("w4", "w4-wo"):
        rep = out[policy][1]
        assert KERNELS <= set(rep["layers"]), rep["layers"].keys()
        assert not rep["float_kernels"] and rep["float_ops"] == 0
        for key in KERNELS:
            info = rep["layers"][key]
            # the input kernel: one op over the steps (_batch_unpacked_rows); the recurrent one per step
            batched = key.endswith("/kernel")
            assert info["ops"] == (1 if batched else STEPS) and info["bits"] == 4, (key, info)
            assert info.get("batched_rows") == (STEPS if batched else None), (key, info)
            assert info["float_activations"] and info["activation_mode"] == "none"
        head = rep["layers"]["ctc_head"]
        assert head["activation_mode"] == ("dynamic" if policy == "w4" else "none")
    # each kernel stored once however many steps use it: 4 of 32 bits plus scales and overheads
    assert out["w4"][0].stat().st_size < 0.5 * out[None][0].stat().st_size


@pytest.mark.parametrize("policy", ["w4-wo", "w4"])
def test_lstm_step_file_equals_keras_quantized_step(lstm_exports, policy):
    m, out = lstm_exports
    rows = _compare_steps(m, out[policy][0], policy)
    for dl, ml, ds, ms in rows:
        assert ms > 0.1 and ml > 0.1
        assert ds <= STATE_BOUND * ms, (policy, rows)
        if policy == "w4-wo":
            assert dl <= LOGIT_BOUND * ml, (policy, rows)
        else:  # int8-dynamic CTC head: at most a few flipped activation roundings
            assert dl <= 0.05 * ml, (policy, rows)


def test_lstmq8_step_runs_the_int8_path_and_equals_keras(lstm_exports):
    """-lstmq8: the same kernels, bytes and ops, but every LSTM op quantizes its rows (x_t, h_{t-1})
    to int8 itself, as the Keras cell does; the file follows the Keras step to a few int8
    roundings (see LSTMQ8_BOUND)."""
    m, out = lstm_exports
    path, rep = out["w4-lstmq8"]
    assert path.stat().st_size == out["w4"][0].stat().st_size
    for key in KERNELS:
        info, float_info = rep["layers"][key], out["w4"][1]["layers"][key]
        assert info["activation_mode"] == "dynamic" and not info["float_activations"], (key, info)
        assert info["ops"] == float_info["ops"] and info["bytes"] == float_info["bytes"]
    rows = _compare_steps(m, path, "w4-lstmq8")
    print("w4-lstmq8 file vs Keras per chunk (logit diff, max, state diff, max):", rows)
    for dl, ml, ds, ms in rows:
        assert ms > 0.1 and ml > 0.1
        assert ds <= LSTMQ8_BOUND * ms and dl <= LSTMQ8_BOUND * ml, rows
    # the bound allows flips; what sets the two paths apart: the float-path file is as far
    # from this Keras step as int8 rounding of every activation makes it
    float_path = _compare_steps(m, out["w4"][0], "w4-lstmq8")
    print("w4 (float path) file vs the w4-lstmq8 Keras step:", float_path)
    assert max(r[2] for r in float_path) > 20 * max(r[2] for r in rows)


def _wo_stack(seed=0, k=40):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, k), name="features")
    h = keras.layers.Dense(64, activation="relu", name="d1")(inp)
    h = keras.layers.Dense(48, name="d2")(h)
    out = keras.layers.Dense(24, name="d3")(h)
    return keras.Model(inp, out)


@pytest.mark.parametrize("policy", ["w4-wo", "w2-sc16-asym-f16-wo"])
def test_weight_only_dense_model_equals_keras(tmp_path, policy):
    q = quantize(_wo_stack(), policy)
    twin, packed, float_act, kept, depthwise = lowering_plan(q)
    assert set(packed) == {"d1", "d2", "d3"} and set(float_act) == set(packed) and not kept
    path = tmp_path / "wo.tflite"
    rep = convert(q, path, input_shape=(1, 7, 40))
    assert all(rep["layers"][n]["activation_mode"] == "none" for n in packed) and rep["float_ops"] == 0
    x = np.random.default_rng(3).normal(0, 1, (1, 7, 40)).astype(np.float32)
    want = q(x, training=False).numpy()
    m = LiteRtModel(path)
    try:
        got = m.run({m.input_names[0]: x})[0]
    finally:
        m.close()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_activation_modes_per_key(tmp_path):
    q = quantize(_wo_stack(), "w4")
    twin = float_twin(q)
    weights = {ql.layer: ql.weight for ql in quantized_layers(q)}
    # the plain mapping still means Dense + dynamic; modes per key select the path
    rep = lower_to_tflite(twin, weights, tmp_path / "a.tflite", input_shape=(1, 3, 40))
    assert {n: i["activation_mode"] for n, i in rep["layers"].items()} == dict.fromkeys(weights, "dynamic")
    rep = lower_to_tflite(twin, weights, tmp_path / "b.tflite", input_shape=(1, 3, 40),
                          activations={"d2": "none", "d1": "dynamic"})
    assert {n: i["activation_mode"] for n, i in rep["layers"].items()} == {"d1": "dynamic", "d2": "none", "d3": "dynamic"}
    with pytest.raises(LoweringError, match="'d9'"):
        lower_to_tflite(twin, weights, tmp_path / "c.tflite", input_shape=(1, 3, 40), activations={"d9": "none"})
    with pytest.raises(LoweringError, match="'d1': activation mode 'static'"):
        lower_to_tflite(twin, weights, tmp_path / "c.tflite", input_shape=(1, 3, 40), activations={"d1": "static"})
    with pytest.raises(LoweringError, match="'d1'"):
        lower_to_tflite(twin, weights, tmp_path / "c.tflite", input_shape=(1, 3, 40),
                        activations={"d1": "dynamic"}, float_activations=["d1"])
    assert not (tmp_path / "c.tflite").exists()


def _custom_blobs(path):
    """{op name: number of distinct constant blob tensors its ops read} of a .tflite."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model(str(path))
    blobs = {}
    for sg in model.subgraphs:
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex].customCode
            if code:
                blobs.setdefault(code.decode(), set()).add(int(op.inputs[1]))
    return {k: len(v) for k, v in blobs.items()}


@pytest.mark.parametrize("policy", ["w4", "w4-lstmq8"])
def test_rolled_lstm_is_unrolled_offline_with_every_kernel_packed(tmp_path, policy):
    """A rolled LSTM (training's form, unroll=False) converts to the fused builtin LSTM op, whose
    variable state tensors LiteRT 2.3.0 refuses at load; the conversion unrolls it over the
    fixed input length, so the offline file loads, every kernel is a packed op (each held once:
    the first step's folded bias becomes an ADD), and it computes the Keras model."""
    m = _lstm()
    assert not m.keras_model.get_layer("lstm0").unroll
    q = quantize(m.keras_model, policy)
    path = tmp_path / "offline.tflite"
    rep = convert(q, path, input_shape=(1, 32, CFG.num_mels))
    assert KERNELS <= set(rep["layers"]) and not rep["float_kernels"] and rep["float_ops"] == 0
    steps = 32 // CFG.stack
    for i in range(2):  # the input kernel: one op over the steps; the recurrent one per step after h_0
        assert rep["layers"][f"lstm{i}/kernel"]["batched_rows"] == steps
        assert rep["layers"][f"lstm{i}/recurrent_kernel"]["ops"] == steps - 1
    assert _custom_blobs(path)["TFQ_FULLY_CONNECTED"] == len(KERNELS) + 1  # + the CTC head
    x = np.random.default_rng(3).normal(0, 1, (1, 32, CFG.num_mels)).astype(np.float32)
    ref = np.asarray(q(x, training=False))
    with LiteRtModel(path) as lite:
        out = lite.run([x])[0]
    bound = LSTMQ8_BOUND * np.abs(ref).max()  # w4: the int8 CTC head input (module docstring)
    assert np.abs(out - ref).max() <= bound
    print(policy, "offline rolled LSTM: max |diff|", np.abs(out - ref).max(), "of", np.abs(ref).max())


def test_bundled_lstm_w4_streaming_file_packs_every_kernel(tmp_path):
    from tfq_asr.models import load_pretrained
    m = load_pretrained("lstm-ctc-xs-w4")
    rep = export_streaming(m, tmp_path / "lstm-w4.tflite")
    keys = {f"lstm{i}/{r}" for i in range(3) for r in ("kernel", "recurrent_kernel")}
    assert keys <= set(rep["layers"]) and not rep["float_kernels"] and rep["float_ops"] == 0
    assert all(rep["layers"][k]["bits"] == 4 and rep["layers"][k]["activation_mode"] == "none" for k in keys)
    size = (tmp_path / "lstm-w4.tflite").stat().st_size
    print("lstm-ctc-xs-w4 streaming file", size, "bytes")
    # fp32 streaming file of lstm-ctc-xs: 6,659,392 bytes; this one measured 958,416 (14%)
    assert size < 0.2 * 6_659_392
