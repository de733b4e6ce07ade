"""tools/convert.py, the LiteRT baselines, offline recognizer files and the public
convert/runtime API, on a tiny streaming Conformer (the CFG of test_streaming.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import tf_keras as keras

from tests.conftest import ROOT
from tests.test_streaming import CFG, _audio, _model
from tests.tool_runner import assert_one_line_error, run_tool

BASELINE_KINDS = ["fp32", "litert-int8", "litert-int4", "litert-int4-pc"]


def one_line_error(proc, *needles):
    assert_one_line_error(proc, *needles, status=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tfq_asr.models import save_model
    folder = tmp_path_factory.mktemp("models") / "tiny-stream"
    save_model(_model(), folder)
    return folder


@pytest.fixture(scope="module")
def converted(model_dir, tmp_path_factory):
    """{policy: (file, report)} written by tools/convert.py --streaming."""
    root = tmp_path_factory.mktemp("convert")
    out = {}
    for policy in BASELINE_KINDS + ["w4", "w2-sc16-asym-f16"]:
        path, rep = root / f"{policy}.tflite", root / f"{policy}.json"
        proc = run_tool("convert.py", "--model", model_dir, "--policy", policy, "--streaming", "--out", path,
                        "--report", rep)
        assert proc.returncode == 0, proc.stderr
        assert f"{path}: " in proc.stdout and "| layer | bits | bytes |" in proc.stdout
        out[policy] = (path, json.loads(rep.read_text()))
    return out


@pytest.mark.parametrize("policy", BASELINE_KINDS + ["w4", "w2-sc16-asym-f16"])
def test_report_matches_the_file_and_the_recognizer_transcribes(converted, policy):
    from tfq_asr.streaming import Recognizer
    path, rep = converted[policy]
    assert rep["size_bytes"] == path.stat().st_size
    assert rep["weight_matrix_bytes"] + rep["other_bytes"] == rep["size_bytes"]
    assert rep["policy"] == policy and rep["streaming"] and rep["method"] == "none"
    assert rep["weight_matrix_bytes"] == sum(r["bytes"] for r in rep["rows"])
    layers = {r["layer"] for r in rep["rows"]}
    assert {"block0_ff1_dense1", "block0_mhsa_query", "ctc_head"} <= layers
    r = Recognizer(path)
    assert r.info["policy"] == policy and r.chunk_frames == 4 * CFG.chunk
    audio = _audio()
    text = r.transcribe(audio)
    assert text  # the test model emits letters
    s = r.stream()  # chunked equals whole
    s.accept(audio[:7000])
    s.accept(audio[7000:])
    assert s.finish() == text


def test_sizes_and_storage_per_policy(converted):
    size = {p: converted[p][0].stat().st_size for p in converted}
    assert size["litert-int8"] < size["fp32"] and size["litert-int4"] < size["litert-int8"]
    assert size["w4"] < size["fp32"] and size["w2-sc16-asym-f16"] < size["w4"]
    rows = {p: {r["layer"]: r for r in converted[p][1]["rows"]} for p in converted}
    assert rows["fp32"]["block0_ff1_dense1"]["bits"] == 32
    assert rows["litert-int8"]["block0_ff1_dense1"]["storage"].startswith("int8 per channel")
    # d_model 32: every K is a multiple of 32, so litert-int4 is blockwise everywhere
    assert rows["litert-int4"]["block0_ff1_dense1"]["storage"] == "int4 block 32 builtin"
    assert rows["litert-int4-pc"]["block0_ff1_dense1"]["storage"] == "int4 per channel builtin"
    assert rows["w4"]["block0_ff1_dense1"]["storage"].startswith("packed TFQ op, int4 sym per channel")
    assert rows["w2-sc16-asym-f16"]["ctc_head"]["bits"] == 2
    # groups of 16 (K = 32): no SIMD kernel takes them, and the report says so
    assert rows["w2-sc16-asym-f16"]["block0_ff1_dense1"]["storage"].endswith("reference kernel (groups not a multiple of 32)")
    assert "reference kernel" not in rows["w4"]["block0_ff1_dense1"]["storage"]
    assert "reference kernel" not in rows["w2-sc16-asym-f16"]["block0_conv_depthwise/depthwise_kernel"]["storage"]
    assert rows["w4"]["block0_conv_depthwise/depthwise_kernel"]["storage"].startswith("packed TFQ op, int4 sym per channel")
    assert converted["w4"][1]["accounted_bytes"] > 0 and converted["litert-int8"][1]["accounted_bytes"] is None
    for p in ("w4", "w2-sc16-asym-f16"):  # issue 4: within 2% of the accounting plus the flatbuffer
        r = converted[p][1]
        overhead = r["flatbuffer_bytes"] + r["alignment_bytes"] + r["blob_framing_bytes"]
        assert overhead + r["constant_bytes"] == r["size_bytes"]
        assert abs(r["size_bytes"] / (r["accounted_bytes"] + overhead) - 1) < 0.02, (p, r["size_bytes"], overhead)


def test_litert_int4_falls_back_to_per_channel_where_k_is_not_a_multiple_of_32(tmp_path):
    from tfq_asr.convert.baselines import write_baseline
    from tfq_asr.runtime import load
    keras.utils.set_random_seed(1)
    inp = keras.Input((5, 48))
    h = keras.layers.Dense(64, activation="relu", name="k48")(inp)   # K = 48: per channel
    out = keras.layers.Dense(16, name="k64")(h)                      # K = 64: blocks of 32
    km = keras.Model(inp, out)
    rep = write_baseline(km, tmp_path / "b.tflite", "litert-int4")
    st = {r["layer"]: r["storage"] for r in rep["weights"]}
    assert st == {"k48": "int4 per channel: K=48 not a multiple of 32", "k64": "int4 block 32 builtin"}
    x = np.random.default_rng(0).normal(size=(1, 5, 48)).astype(np.float32)
    with load(tmp_path / "b.tflite") as m:
        (y,) = m.run(x)
    want = km(x).numpy()
    assert np.abs(y - want).max() < 0.25 * np.abs(want).max()  # int4 weights: close, not exact


def test_offline_file_pads_short_audio_and_refuses_long_audio(model_dir, tmp_path):
    from tfq_asr.errors import UserError
    from tfq_asr.streaming import TfliteTranscriber, load_any
    for policy in ("w4", "litert-int8"):
        path, rep = tmp_path / f"off-{policy}.tflite", tmp_path / f"off-{policy}.json"
        proc = run_tool("convert.py", "--model", model_dir, "--policy", policy, "--input-frames", 300, "--out", path,
                        "--report", rep)
        assert proc.returncode == 0, proc.stderr
        assert "offline, 300 frames" in proc.stdout
        if policy == "w4":  # the size bar holds offline too: no [heads, T, T] bias or [T, T] mask folded in
            r = json.loads(rep.read_text())
            overhead = r["flatbuffer_bytes"] + r["alignment_bytes"] + r["blob_framing_bytes"]
            assert abs(r["size_bytes"] / (r["accounted_bytes"] + overhead) - 1) < 0.02, r["size_bytes"]
        t = load_any(path)
        assert isinstance(t, TfliteTranscriber)
        assert isinstance(t.transcribe(_audio(2.0)), str)
        with pytest.raises(UserError, match="longer than this offline file's fixed input of 300 frames"):
            t.transcribe(_audio(3.5))


def test_offline_lstm_file_loads_and_transcribes_as_its_checkpoint(tmp_path):
    """tools/convert.py without --streaming on the bundled LSTM: the rolled LSTMs are unrolled
    at conversion (the fused builtin LSTM op it wrote before made a file LiteRT refused at load,
    its kernels float: 7.6x the size accounting), so every kernel is packed, the file holds each
    once within the 2% size bar, and it transcribes the demo clip as the checkpoint does."""
    from tfq_asr.frontend import log_mel
    from tfq_asr.models import load_pretrained
    from tfq_asr.streaming import load_any
    from tfq_asr import decode
    path, rep = tmp_path / "lstm-off.tflite", tmp_path / "lstm-off.json"
    proc = run_tool("convert.py", "--model", "lstm-ctc-xs-w4", "--input-frames", 480, "--out", path, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(rep.read_text())
    assert not r["float_kernels"] and {f"lstm{i}/{k}" for i in range(3) for k in ("kernel", "recurrent_kernel")} <= set(r["layers"])
    overhead = r["flatbuffer_bytes"] + r["alignment_bytes"] + r["blob_framing_bytes"]
    assert abs(r["size_bytes"] / (r["accounted_bytes"] + overhead) - 1) < 0.02, r["size_bytes"]
    audio, _ = sf.read(ROOT / "tfq_asr" / "data" / "demo" / "test-000017.flac", dtype="float32")
    want = decode.greedy_decode(load_pretrained("lstm-ctc-xs-w4").keras_model(log_mel(audio)[None]).numpy()[0])
    t = load_any(path)
    assert want and t.transcribe(audio) == want


def test_evaluate_and_transcribe_on_tflite(converted, tmp_path):
    from tfq_asr.eval.evaluate import evaluate_manifest
    from tfq_asr.streaming import Recognizer
    wav = tmp_path / "a.wav"
    sf.write(wav, _audio(1.5), 16000)
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tduration\tvoice\tengine\ttext\na.wav\t1.5\tv\tespeak\thello there\n")
    path = converted["litert-int8"][0]
    proc = run_tool("evaluate.py", "--model", path, "--manifest", manifest, "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["model"] == path.name and res["overall"]["utterances"] == 1 and res["rtf"] > 0
    # a Recognizer object: same transcript, RTF measured the same way
    r = Recognizer(converted["w4"][0])
    res2 = evaluate_manifest(r, manifest, progress=False)
    assert res2["model"] == "w4.tflite" and res2["utterances"][0]["hyp"] == r.transcribe(_audio(1.5))
    with pytest.raises(Exception, match="beam"):
        evaluate_manifest(r, manifest, beam_width=4, progress=False)
    proc = run_tool("transcribe.py", "--model", converted["w4"][0], "--json", wav)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["text"] == r.transcribe(_audio(1.5))


def test_quantized_checkpoint_and_methods(model_dir, tmp_path):
    from tfq_asr.models import AsrModel, load_pretrained, save_model
    from tfq_asr.quant.apply import as_policy, quantize
    src = load_pretrained(model_dir)
    ckpt = tmp_path / "ckpt"
    save_model(AsrModel("tiny-w4", CFG, quantize(src.keras_model, "w4"),
                        quantization={"policy": as_policy("w4").to_dict(), "method": "none"}), ckpt)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.iterdir())
    out = tmp_path / "c.tflite"
    proc = run_tool("convert.py", "--model", ckpt, "--streaming", "--out", out, "--report", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["policy"] == "w4" and rep["policy_kind"] == "checkpoint" and rep["size_bytes"] == out.stat().st_size
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.iterdir()) == before  # input untouched
    one_line_error(run_tool("convert.py", "--model", ckpt, "--policy", "w2", "--out", tmp_path / "x.tflite"),
                   "quantized with w4", "disagrees")
    one_line_error(run_tool("convert.py", "--model", ckpt, "--policy", "litert-int8", "--out", tmp_path / "x.tflite"),
                   "disagrees")
    proc = run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--method", "zero-shot", "--streaming",
                    "--out", tmp_path / "zs.tflite", "--report", tmp_path / "zs.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "zs.json").read_text())["method"] == "zero-shot"
    assert not (tmp_path / "x.tflite").exists()


def test_calibration_from_a_folder_of_audio(model_dir, tmp_path):
    """--calibration DIR: every audio file below the folder (no transcripts needed), at any rate,
    spread over --num-calibration picks; other files are ignored; an empty folder is refused."""
    from tests.tool_runner import _tool_module
    from tfq_asr.audio import load_audio
    from tfq_asr.frontend import log_mel
    folder = tmp_path / "calib"
    (folder / "more").mkdir(parents=True)
    files = [folder / "a.wav", folder / "more" / "b.FLAC", folder / "c.wav"]
    for i, (f, rate) in enumerate(zip(files, (16000, 22050, 8000))):
        sf.write(f, _audio(0.6 + 0.2 * i, seed=i)[: int(rate * (0.6 + 0.2 * i))], rate)
    (folder / "notes.txt").write_text("not audio")
    load_calibration = _tool_module("quantize.py").load_calibration
    got = load_calibration(folder, 8, None)
    want = [log_mel(load_audio(f)) for f in sorted(files)]  # a.wav, c.wav, more/b.FLAC
    assert len(got) == 3 and all(np.array_equal(g, w) for g, w in zip(got, want))
    assert len(load_calibration(folder, 2, None)) == 2
    out, rep = tmp_path / "ptq.tflite", tmp_path / "ptq.json"
    proc = run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--calibration", folder, "--streaming",
                    "--out", out, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(rep.read_text())["method"] == "ptq" and out.stat().st_size > 0
    (tmp_path / "empty").mkdir()
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--calibration", tmp_path / "empty",
                            "--out", tmp_path / "x.tflite"), "empty", "no audio files")
    assert not (tmp_path / "x.tflite").exists()
    # a file that is not audio: refused by name, on a line of its own after the progress bar
    (folder / "more" / "broken.wav").write_text("not audio either")
    proc = run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--calibration", folder,
                    "--out", tmp_path / "x.tflite", isolated=True)
    last = proc.stderr.splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: cannot read audio file") and "broken.wav" in last, \
        proc.stderr
    assert not (tmp_path / "x.tflite").exists()


def test_cli_errors(model_dir, tmp_path):
    out = tmp_path / "o.tflite"
    one_line_error(run_tool("convert.py", "--model", "no-such-model", "--policy", "w4", "--out", out), "unknown model")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "w5", "--out", out), "--policy w5", "bits")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "litert-int2", "--out", out),
                   "unknown baseline", "litert-int4")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "nonsense", "--out", out),
                   "--policy nonsense", "fp32")
    one_line_error(run_tool("convert.py", "--model", "conformer-xs", "--policy", "w4", "--out", out), "--random-weights")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--random-weights", "--out", out), "configuration names")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--out", tmp_path), "is a directory")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--out", tmp_path / "no" / "o.tflite"), "does not exist")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--method", "ptq", "--out", out),
                   "--calibration")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "litert-int8", "--calibration", "synthetic",
                            "--out", out), "baseline")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    one_line_error(run_tool("transcribe.py", "--model", bad, ROOT / "tfq_asr" / "data" / "demo" / "test-000017.flac"),
                   "bad.tflite")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


def test_chunk_and_left_context_options(model_dir, tmp_path):
    """--chunk-ms / --left-context-ms set the streaming window of the written file; the
    recognizer runs it; bad values are one-line errors."""
    from tfq_asr.runtime.litert import read_tfq_metadata
    from tfq_asr.streaming import Recognizer
    out = tmp_path / "c.tflite"
    proc = run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--streaming", "--chunk-ms", 160,
                    "--left-context-ms", 80, "--out", out)
    assert proc.returncode == 0, proc.stderr
    info = read_tfq_metadata(out)["streaming"]
    assert info["chunk_frames"] == 16
    keys = [s for s in info["states"] if s["input"].endswith("_key")]
    assert keys and all(s["shape"][1] == 2 for s in keys)  # 80 ms of left context = 2 encoder frames
    r = Recognizer(out)
    assert isinstance(r.transcribe(_audio(1.1)), str)
    r.close()
    for args, needle in ((["--chunk-ms", 150], "multiple of 40"), (["--chunk-ms", 0], "multiple of 40"),
                         (["--left-context-ms", 30], "multiple of 40")):
        one_line_error(run_tool("convert.py", "--model", model_dir, "--streaming", *args, "--out", out), needle)
    one_line_error(run_tool("convert.py", "--model", model_dir, "--chunk-ms", 160, "--out", out), "--streaming")
    one_line_error(run_tool("convert.py", "--model", "lstm-xs", "--random-weights", "--streaming",
                            "--left-context-ms", 80, "--out", out), "LSTM")


def test_random_weight_config_is_marked_speed_only(tmp_path):
    out = tmp_path / "r.tflite"
    proc = run_tool("convert.py", "--model", "lstm-xs", "--random-weights", "--policy", "w4", "--input-frames", 40,
                    "--out", out, "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["speed_only"] and rep["model"] == "lstm-xs-random" and "speed only" in proc.stdout
    assert rep["size_bytes"] == out.stat().st_size


def test_api_convert_and_load_on_a_generic_model(tmp_path):
    import tfq_asr
    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Reshape((6, 64))(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(5, name="fc2")(x)
    km = keras.Model(inp, out)
    q = tfq_asr.quantize(km, "w4-sc16")
    stages = []
    rep = tfq_asr.convert(q, tmp_path / "g.tflite", input_shape=(1, 6, 8, 3), progress=stages.append)
    assert stages == ["integer weights of the quantized layers", "float graph with the dequantized weights",
                      "TFLite converter", "packing 2 quantized kernels into custom ops"]
    assert rep["size_bytes"] == (tmp_path / "g.tflite").stat().st_size
    assert set(rep["layers"]) == {"fc1", "fc2"} and [k["layer"] for k in rep["float_kernels"]] == ["conv"]
    m = tfq_asr.runtime.load(tmp_path / "g.tflite", num_threads=1)
    x = np.random.default_rng(3).normal(size=(1, 6, 8, 3)).astype(np.float32)
    outs = m.run(x)
    assert isinstance(outs, list) and len(outs) == 1 and outs[0].shape == (1, 6, 5)
    want = q(x).numpy()
    np.testing.assert_allclose(outs[0], want, rtol=1e-3, atol=2e-2 * np.abs(want).max())
    assert m.input_names and m.output_names
    m.close()


@pytest.mark.parametrize("policy", ["w8", "w8-asym"])
def test_api_stores_8_bit_kernels_as_int8_with_a_dequantize(tmp_path, policy):
    """8-bit kernels (not in the packed format) stay builtin with float activations, but their
    weights are stored as int8 with per-channel scales and a DEQUANTIZE: a quarter of the bytes,
    the same outputs bit for bit as storing the dequantized floats.  A VALID Conv2D at 8 bits
    (a patch-dense candidate) went to the packed path and raised a LoweringError before."""
    import tfq_asr
    from tfq_asr.convert.export import lowering_plan
    from tfq_asr.convert.lowering import lower_to_tflite
    keras.utils.set_random_seed(6)
    inp = keras.Input((20, 12, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(inp)
    x = keras.layers.LSTM(16, return_sequences=True, name="lstm")(keras.layers.Reshape((9, 40))(x))
    km = keras.Model(inp, keras.layers.Dense(4, name="fc")(x))
    q = tfq_asr.quantize(km, policy)
    path, shape = tmp_path / "w8.tflite", (1, 20, 12, 1)
    rep = tfq_asr.convert(q, path, input_shape=shape)
    assert not rep["layers"]
    kept = {(k["layer"], k["role"]): k for k in rep["float_kernels"]}
    assert set(kept) == {("conv", "kernel"), ("lstm", "kernel"), ("lstm", "recurrent_kernel"), ("fc", "kernel")}
    assert all(k["why"] == "8-bit weights are not in the packed format" and k["stored"] == "int8" for k in kept.values())
    twin = lowering_plan(q)[0]
    lower_to_tflite(twin, {}, tmp_path / "float.tflite", input_shape=shape)  # the same kernels stored float
    n_weights = sum(int(np.prod(w.shape)) for w in (km.get_layer("conv").kernel, km.get_layer("fc").kernel,
                                                    *km.get_layer("lstm").cell.weights[:2]))
    assert (tmp_path / "float.tflite").stat().st_size - path.stat().st_size >= 3 * n_weights - 4096
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    with tfq_asr.runtime.load(path) as m, tfq_asr.runtime.load(tmp_path / "float.tflite") as f:
        got, want = m.run(x)[0], f.run(x)[0]
    assert got.shape == (1, 9, 4) and np.array_equal(got, want)


def test_w8_conformer_stores_every_dense_kernel_as_int8(tmp_path):
    """The converter folds the macaron 1/2 into each feed-forward block's second kernel: the
    power of two goes into the int8 scales, so those are stored as int8 too (they stayed float
    at first: the w8 xs file was 4,437,264 bytes, now 2,461,648).  The depthwise kernels, whose
    BatchNorm is folded in, stay float.  Outputs equal the float-stored file bit for bit."""
    import tfq_asr
    from tfq_asr.convert.export import lowering_plan
    from tfq_asr.convert.lowering import lower_to_tflite
    from tfq_asr.models import load_pretrained
    q = tfq_asr.quantize(load_pretrained("conformer-ctc-xs").keras_model, "w8")
    shape = (1, 64, 80)
    rep = tfq_asr.convert(q, tmp_path / "w8.tflite", input_shape=shape)
    kept = {k["layer"]: k.get("stored") for k in rep["float_kernels"]}
    assert {n for n, st in kept.items() if st != "int8"} == {f"block{i}_conv_depthwise" for i in range(4)}
    assert kept["block0_ff1_dense2"] == "int8"
    lower_to_tflite(lowering_plan(q)[0], {}, tmp_path / "float.tflite", input_shape=shape)
    x = np.random.default_rng(10).normal(size=shape).astype(np.float32)
    with tfq_asr.runtime.load(tmp_path / "w8.tflite") as m, tfq_asr.runtime.load(tmp_path / "float.tflite") as f:
        assert np.array_equal(m.run(x)[0], f.run(x)[0])
    assert (tmp_path / "w8.tflite").stat().st_size < 0.3 * (tmp_path / "float.tflite").stat().st_size


def test_api_lowers_static_activation_ranges_to_the_op(tmp_path):
    """w4-static: each Dense op quantizes its input with the layer's calibrated scale (max|x| /
    127, the flag TFQ_OP_FLAG_STATIC_ACT), as the Keras layer does, clipping what lies beyond
    the range; before, the kernels were float builtins, an fp32-sized file without the
    activation rounding.  Static layers are neither chained nor batched (one layer per call)."""
    import tfq_asr
    keras.utils.set_random_seed(8)
    inp = keras.Input((5, 64))
    h = keras.layers.Dense(96, activation="relu", name="d1")(inp)
    km = keras.Model(inp, keras.layers.Dense(16, name="d2")(keras.layers.Activation("swish")(h)))
    rng = np.random.default_rng(9)
    calib = rng.normal(size=(5, 64)).astype(np.float32)
    q = tfq_asr.quantize(km, "w4-static", calibration=[calib])
    rep = tfq_asr.convert(q, tmp_path / "s.tflite", input_shape=(1, 5, 64))
    assert set(rep["layers"]) == {"d1", "d2"} and not rep["float_kernels"]
    assert all(rep["layers"][n]["activation_mode"] == "static" and "chained_with" not in rep["layers"][n]
               for n in ("d1", "d2"))
    assert rep["size_bytes"] < 8000  # 7,680 weights: 30 KB as float
    with tfq_asr.runtime.load(tmp_path / "s.tflite") as m:
        for amplitude in (1.0, 3.0):  # 3: many inputs beyond the calibrated range, clipped
            x = (amplitude * rng.normal(size=(1, 5, 64))).astype(np.float32)
            got, want = m.run(x)[0], q(x).numpy()
            # Float rounding only (measured 1.4e-7 and 1.5e-7 of the largest output; a last-bit
            # difference could flip one int8 rounding of d2's input, not at this seed).  Per-row
            # scales instead of the calibrated one round the inputs differently and clip nothing.
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), amplitude


def test_api_calibrates_a_model_whose_input_is_not_features(tmp_path):
    """PTQ calibration takes inputs of the model's own shape ([H, W, C] here, with or without a
    batch of 1); it accepted only [T, F] features before.  Wrong shapes and models with several
    inputs are refused by name."""
    import tfq_asr
    from tfq_asr.errors import UserError
    keras.utils.set_random_seed(11)
    inp = keras.Input((20, 12, 1))
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c1")(inp)
    x = keras.layers.Reshape((7, 96))(keras.layers.Conv2D(32, 3, strides=1, name="c2")(x))
    km = keras.Model(inp, keras.layers.Dense(8, name="head")(x))
    rng = np.random.default_rng(12)
    calib = [rng.normal(size=(20, 12, 1)).astype(np.float32), rng.normal(size=(1, 20, 12, 1)).astype(np.float32)]
    q = tfq_asr.quantize(km, "w4-static-convq8", calibration=calib)
    rep = tfq_asr.convert(q, tmp_path / "c.tflite")
    assert rep["layers"]["head"]["activation_mode"] == "static"
    x = rng.normal(size=(1, 20, 12, 1)).astype(np.float32)
    with tfq_asr.runtime.load(tmp_path / "c.tflite") as m:
        got, want = m.run(x)[0], q(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    with pytest.raises(UserError, match=r"calibration input 0: expected a \[20, 12, 1\] or \[1, 20, 12, 1\] array"):
        tfq_asr.quantize(km, "w4-static", calibration=[np.zeros((12, 20, 1), np.float32)])
    a, b = keras.Input((4, 8)), keras.Input((4, 8))
    two = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Add()([a, b])))
    with pytest.raises(UserError, match="2 inputs: calibration takes models with one input"):
        tfq_asr.quantize(two, "w4-static", calibration=[np.zeros((4, 8), np.float32)])


@pytest.mark.parametrize("policy", ["w4", "fp32", "litert-int8"])
def test_api_keeps_the_keras_order_of_inputs_and_outputs(tmp_path, policy):
    """The converter orders a signature's outputs by name; `run` takes and returns them in the
    Keras model's order all the same (names chosen to sort the other way).  The model also has
    a plain rolled LSTM that returns its last state, read backwards: unrolled at conversion."""
    import tfq_asr
    from tfq_asr.convert.baselines import write_baseline
    keras.utils.set_random_seed(4)
    a, b = keras.Input((6, 32), name="zeta"), keras.Input((6, 16), name="alpha")
    h = keras.layers.Dense(32, name="mix")(keras.layers.Concatenate()([a, keras.layers.Dense(32, name="pre")(b)]))
    last = keras.layers.LSTM(12, go_backwards=True, name="lstm")(h)
    km = keras.Model([a, b], [keras.layers.Dense(10, name="z_head")(h), keras.layers.Dense(5, name="a_head")(last)])
    rng = np.random.default_rng(5)
    xa, xb = rng.normal(size=(1, 6, 32)).astype(np.float32), rng.normal(size=(1, 6, 16)).astype(np.float32)
    path = tmp_path / "io.tflite"
    if policy.startswith(("fp32", "litert")):
        write_baseline(km, path, policy)
        model, tol = km, 0.05
    else:
        model, tol = tfq_asr.quantize(km, policy), 1e-4
        rep = tfq_asr.convert(model, path)
        assert {"lstm/kernel", "lstm/recurrent_kernel"} <= set(rep["layers"]) and not rep["float_kernels"]
    want = [np.asarray(t) for t in model([xa, xb])]
    with tfq_asr.runtime.load(path) as m:
        assert m.input_names == ["zeta", "alpha"] and m.output_names == ["z_head", "a_head"]
        assert m.input_shapes == [(1, 6, 32), (1, 6, 16)]  # in the same (Keras) order
        assert sorted(m.model.output_names) == m.model.output_names  # the signature's own order
        outs = m.run(xa, xb)
        with pytest.raises(ValueError, match="2 inputs expected"):
            m.run(xa)
    assert [o.shape for o in outs] == [(1, 6, 10), (1, 5)]
    for o, w in zip(outs, want):
        np.testing.assert_allclose(o, w, atol=tol * np.abs(w).max())


def test_int8_convs_option(model_dir, tmp_path):
    """--int8-convs: the policy gets -convq8 (the subsampling convolution with >= 32 inputs per
    patch runs TFQ_CONV_2D on int8 patches, the first one stays on float inputs); the file
    transcribes; a LiteRT baseline refuses the option."""
    from tfq_asr.streaming import Recognizer
    path, rep = tmp_path / "q8.tflite", tmp_path / "q8.json"
    proc = run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--int8-convs", "--streaming",
                    "--out", path, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    assert report["policy"] == "w4-convq8"
    convs = {k: v for k, v in report["layers"].items() if v.get("op") == "TFQ_CONV_2D"}
    modes = {v["activation_mode"] for v in convs.values()}
    assert len(convs) == 2 and modes == {"dynamic", "none"}, convs
    r = Recognizer(path)
    assert r.info["policy"] == "w4-convq8" and r.transcribe(_audio())
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "litert-int8", "--int8-convs",
                            "--streaming", "--out", tmp_path / "b.tflite"), "--int8-convs", "not a TFQ policy")
    one_line_error(run_tool("convert.py", "--model", model_dir, "--policy", "w4", "--int8-lstm",
                            "--streaming", "--out", tmp_path / "c.tflite"), "--int8-lstm", "no LSTM layers")
    assert not (tmp_path / "c.tflite").exists()


def test_int8_lstm_option_on_the_bundled_lstm_checkpoint(tmp_path):
    """--int8-lstm on a QAT checkpoint: its integer weights are kept (post-training for the
    activations), every LSTM kernel runs the int8 path, and the file transcribes."""
    from tfq_asr.streaming import Recognizer
    path, rep = tmp_path / "lstm-q8.tflite", tmp_path / "lstm-q8.json"
    proc = run_tool("convert.py", "--model", "lstm-ctc-xs-w4", "--int8-lstm", "--streaming", "--chunk-ms", "80",
                    "--out", path, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    assert report["policy"] == "w4-lstmq8"
    kernels = {k: v for k, v in report["layers"].items() if k.startswith("lstm")}
    assert len(kernels) == 6 and all(v["activation_mode"] == "dynamic" and v["bits"] == 4 for v in kernels.values())
    r = Recognizer(path)
    try:
        assert r.info["policy"] == "w4-lstmq8" and r.chunk_frames == 8
        assert isinstance(r.transcribe(_audio()), str)
    finally:
        r.close()
