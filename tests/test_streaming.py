"""Streaming export (.tflite with explicit state) and the streaming Recognizer over LiteRT."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tf_keras as keras

import tfq_asr
from tfq_asr.convert.export import convert, export_streaming
from tfq_asr.errors import UserError
from tfq_asr.models import AsrModel, build_model, get_config
from tfq_asr.models.streaming import build_step_model, run_streaming_keras, transfer_weights
from tfq_asr.streaming import Recognizer

CFG = dataclasses.replace(get_config("conformer-xs"), num_blocks=1, d_model=32, num_heads=2,
                          subsample_channels=8, chunk=4, left_context=8, conv_kernel=7)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    km = build_model(CFG)
    rng = np.random.default_rng(seed)
    for w in km.weights:
        if "moving_variance" in w.name or "inv_std" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif "ctc_head/bias" in w.name:  # favour a few letters so transcripts are not empty
            w.assign(np.where(np.arange(w.shape[0]) % 7 == 1, 2.0, 0.0))
        else:
            w.assign(rng.normal(0, 0.3, w.shape))
    return AsrModel("tiny", CFG, km)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    m = _model()
    out = {}
    for policy in (None, "w4-sc16"):
        path = root / f"{policy or 'fp32'}.tflite"
        out[policy] = (path, export_streaming(m, path, policy=policy))
    return m, out


def _audio(seconds=2.3, seed=0):
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def test_export_report_and_metadata(exported):
    m, out = exported
    path, rep = out["w4-sc16"]
    assert rep["size_bytes"] == path.stat().st_size
    assert len(rep["layers"]) == 15  # every Dense of the block, subsampling convs and dense, head, depthwise
    assert {"subsample_conv1", "subsample_conv2"} <= set(rep["layers"])  # convs: im2col + packed op
    assert rep["layers"]["subsample_conv2"]["activation_mode"] == "none"  # float path, as the Keras conv
    assert rep["layers"]["block0_conv_depthwise/depthwise_kernel"]["op"] == "TFQ_DEPTHWISE_CONV_1D"
    assert rep["float_kernels"] == []  # every quantized kernel is packed
    r = Recognizer(path)
    assert r.chunk_frames == 4 * CFG.chunk and len(r.info["states"]) == 3 + 3 * CFG.num_blocks
    fp32_path, fp32_rep = out[None]
    assert fp32_rep["layers"] == {} and fp32_path.stat().st_size > path.stat().st_size


@pytest.mark.parametrize("policy", [None, "w4-sc16"])
def test_any_chunking_gives_the_whole_utterance_transcript(exported, policy):
    _, out = exported
    r = Recognizer(out[policy][0])
    audio = _audio()
    whole = r.transcribe(audio)
    assert whole  # the test model emits letters
    rng = np.random.default_rng(1)
    for _ in range(3):
        s = r.stream()
        i = 0
        partials = []
        while i < audio.size:
            n = int(rng.integers(0, 3000))
            s.accept(audio[i:i + n])
            partials.append(s.partial())
            i += n
        # greedy partials only grow: each is a prefix of the final transcript
        assert all(whole.startswith(p) for p in partials)
        assert s.finish() == whole


def test_tflite_steps_equal_keras_steps(exported):
    from tfq_asr.frontend import log_mel
    m, out = exported
    step = build_step_model(CFG)
    transfer_weights(m.keras_model, step)
    feats = log_mel(_audio())
    n = 4 * CFG.chunk
    feats = feats[:len(feats) // n * n]
    keras_logits = run_streaming_keras(step, CFG, feats)
    r = Recognizer(out[None][0])
    state, got = r.initial_state(), []
    for i in range(0, len(feats), n):
        logits, state = r.step(feats[i:i + n], state)
        got.append(logits)
    got = np.concatenate(got)
    np.testing.assert_allclose(got, keras_logits, rtol=1e-4, atol=1e-4 * np.abs(keras_logits).max())


def test_bad_input_is_refused_and_stream_stays_usable(exported, tmp_path):
    m, out = exported
    r = Recognizer(out["w4-sc16"][0])
    s = r.stream()
    audio = _audio(1.0)
    s.accept(audio[:8000])
    with pytest.raises(ValueError, match="NaN"):
        s.accept(np.array([0.0, np.nan], np.float32))
    s.accept(audio[8000:])
    s.accept(np.zeros(0, np.float32))
    assert s.finish() == r.transcribe(audio)
    with pytest.raises(UserError, match="after finish"):
        s.accept(audio)
    # integer PCM (int16 from a microphone) is scaled to [-1, 1] as a file reader does
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    s = r.stream()
    s.accept(pcm[:3000])
    s.accept(pcm[3000:])
    assert s.finish() == r.transcribe(pcm.astype(np.float32) / 32768) == r.transcribe(pcm, 16000)
    # [frames, channels] chunks, as an audio callback (sounddevice, soundfile) gives them: averaged
    stereo = np.stack([audio, 0.5 * audio], axis=1)
    s = r.stream()
    for i in range(0, len(stereo), 4321):
        s.accept(stereo[i:i + 4321])
    assert s.finish() == r.transcribe(stereo) == r.transcribe(0.75 * audio)
    for bad in (np.zeros((10, 20), np.float32), np.zeros((2, 3, 4), np.float32)):
        with pytest.raises(ValueError, match=r"\[n, channels\]"):
            r.stream().accept(bad)
    assert tfq_asr.Recognizer is Recognizer  # the top-level name of the API
    offline = tmp_path / "offline.tflite"
    convert(m.keras_model, offline, input_shape=(1, 64, 80))
    with pytest.raises(UserError, match="not a streaming model"):
        Recognizer(offline)
    with pytest.raises(ValueError, match="not a streaming configuration"):
        export_streaming(AsrModel("x", dataclasses.replace(CFG, chunk=0), build_model(dataclasses.replace(CFG, chunk=0))),
                         tmp_path / "x.tflite")


def test_streams_at_other_sample_rates_resample_as_they_arrive(exported):
    """A 44.1 kHz (or 8 kHz) microphone streams as it is: the stream resamples each chunk, and
    any chunking gives the transcript of resampling the whole audio; the logits of every step
    are the same too, so the resampled samples are."""
    import soxr
    r = Recognizer(exported[1]["w4-sc16"][0])
    audio = _audio()
    for rate in (44100, 8000):
        x = soxr.resample(audio, 16000, rate, "HQ").astype(np.float32)
        whole = r.transcribe(x, rate)
        assert whole and whole == r.transcribe(np.round(x * 32767).astype(np.int16), rate)
        rng = np.random.default_rng(rate)
        for _ in range(2):
            s = r.stream(sample_rate=rate)
            i = 0
            while i < x.size:
                n = int(rng.integers(0, 9000))
                s.accept(x[i:i + n])
                i += n
            assert whole.startswith(s.partial()) and s.finish() == whole
            assert s.samples == x.size
    with pytest.raises(UserError, match="sample_rate = 0"):
        r.stream(sample_rate=0)
    for bad in (-16000, 16000.5, "16k", True, float("nan")):
        with pytest.raises(UserError, match="sample_rate"):
            r.transcribe(audio, bad)
    assert r.transcribe(audio, 16000.0) == r.transcribe(audio)


def test_whole_audio_layouts_dtypes_and_a_closed_recognizer(exported):
    r = Recognizer(exported[1]["w4-sc16"][0])
    audio = _audio()
    whole = r.transcribe(audio)
    # the Keras model takes the same kinds of samples as the .tflite recognizers
    m = exported[0]
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    assert m.transcribe(pcm) == m.transcribe(pcm.astype(np.float32) / 32768)
    assert m.transcribe(np.stack([audio, audio], axis=1)) == m.transcribe(audio)
    import soxr
    assert m.transcribe(soxr.resample(audio, 16000, 22050, "HQ"), sample_rate=22050) == \
        m.transcribe(soxr.resample(soxr.resample(audio, 16000, 22050, "HQ"), 22050, 16000, "HQ"))
    # stereo from soundfile ([n, channels]) and from librosa ([channels, n]) are both averaged
    assert r.transcribe(np.stack([audio, audio], axis=1)) == whole
    assert r.transcribe(np.stack([audio, audio, audio])) == whole
    for bad, match in ((audio[None, None], "shape"), (np.zeros((40, 40)), "shape"),
                       (audio.astype(np.complex64), "complex64"), (np.array(["a"]), "not sound")):
        with pytest.raises(ValueError, match=match):
            r.transcribe(bad)
    with pytest.raises(ValueError, match="NaN"):
        r.transcribe(np.array([0.0, np.inf], np.float32))
    for beam in (-1, 2.5, True):
        with pytest.raises(UserError, match="beam_width"):
            Recognizer(exported[1]["w4-sc16"][0], beam_width=beam)
    with Recognizer(exported[1]["w4-sc16"][0]) as closed:
        assert closed.transcribe(audio) == whole
    from tfq_asr.runtime.litert import LiteRtError
    with pytest.raises(LiteRtError, match="closed"):
        closed.transcribe(audio)
    with pytest.raises(LiteRtError, match="is a folder, not a .tflite file"):
        Recognizer(exported[1]["w4-sc16"][0].parent)
    closed.close()  # twice is fine


def test_long_chunks_reach_the_frontend_in_pieces(exported, monkeypatch):
    """accept() of a long array (or transcribe() of a whole recording) hands the frontend a
    piece at a time (one push of an hour-long array held all of its spectra at once) and
    gives the transcript of one push; so does a stream at another sample rate."""
    import tfq_asr.streaming as streaming
    r = Recognizer(exported[1]["w4-sc16"][0])
    audio = _audio(seconds=2.3)
    whole, at_8k = r.transcribe(audio), r.transcribe(_audio(seconds=2.3)[::2], sample_rate=8000)
    sizes = []
    push = streaming.IncrementalLogMel.push

    def spy(self, samples):
        sizes.append(len(samples))
        return push(self, samples)

    monkeypatch.setattr(streaming, "PIECE_SAMPLES", 8000)
    monkeypatch.setattr(streaming.IncrementalLogMel, "push", spy)
    assert r.transcribe(audio) == whole
    assert sizes == [8000] * (audio.size // 8000) + [audio.size % 8000]
    sizes.clear()
    s = r.stream(sample_rate=8000)
    s.accept(_audio(seconds=2.3)[::2])
    assert s.finish() == at_8k and len(sizes) > 2 and max(sizes) < 17000, sizes  # soxr holds a few back


@pytest.mark.parametrize("kind", ["litert-int8", "litert-int4"])
def test_litert_baselines_stream_like_our_files(exported, tmp_path, kind):
    from tfq_asr.convert.baselines import export_streaming_baseline
    m, out = exported
    path = tmp_path / f"{kind}.tflite"
    rep = export_streaming_baseline(m, path, kind)
    assert rep["size_bytes"] == path.stat().st_size < out[None][0].stat().st_size
    r = Recognizer(path)
    assert r.info["policy"] == kind
    audio = _audio()
    s = r.stream()
    s.accept(audio[:5000])
    s.accept(audio[5000:])
    assert s.finish() == r.transcribe(audio)


def test_baselines_refuse_quantized_checkpoints_and_unknown_kinds(exported, tmp_path):
    from tfq_asr.convert.baselines import baseline_bytes, export_streaming_baseline
    from tfq_asr.quant.apply import quantize
    m, _ = exported
    q = AsrModel("q", CFG, quantize(m.keras_model, "w4"), quantization={"policy": {"name": "w4"}})
    with pytest.raises(ValueError, match="baselines start from the float model"):
        export_streaming_baseline(q, tmp_path / "q.tflite", "litert-int8")
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_bytes(m.keras_model, "litert-int3")


def test_public_api_quantize_convert_load_run_on_a_generic_model(tmp_path):
    import tfq_asr
    keras.utils.set_random_seed(4)
    inp = keras.Input((10, 64))
    x = keras.layers.Conv1D(64, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Dense(96, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(8, name="out")(x)
    km = keras.Model(inp, out)
    q = tfq_asr.quantize(km, "w4")
    with pytest.raises(ValueError, match="is a directory"):  # before any work, nothing written
        tfq_asr.convert(q, tmp_path, input_shape=(1, 10, 64))
    import keras as keras3  # the usual mistake: a Keras 3 model, whose class is also "Functional"
    k3 = keras3.Sequential([keras3.Input((10, 64)), keras3.layers.Dense(8)])
    for call in (lambda: tfq_asr.quantize(k3, "w4"), lambda: tfq_asr.convert(k3, tmp_path / "k3.tflite"),
                 lambda: tfq_asr.convert("model", tmp_path / "s.tflite")):
        with pytest.raises(UserError, match="needs a tf_keras Model, got .*(Keras 3|builtins.str)"):
            call()
    assert not list(tmp_path.iterdir())
    rep = tfq_asr.convert(q, tmp_path / "g.tflite", input_shape=(1, 10, 64))
    assert rep["size_bytes"] == (tmp_path / "g.tflite").stat().st_size and set(rep["layers"]) == {"hidden", "out"}
    x = np.random.default_rng(0).normal(size=(1, 10, 64)).astype(np.float32)
    with tfq_asr.runtime.load(tmp_path / "g.tflite", num_threads=1) as m:
        assert m.input_shapes == [(1, 10, 64)] and m.input_dtypes == [np.float32] == m.output_dtypes
        (y,) = m.run(x)
    want = q(x).numpy()
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_benchmark_tool_reports_every_field(exported, tmp_path):
    import json
    import subprocess
    import sys
    import soundfile as sf
    from tests.conftest import ROOT
    _, out = exported
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", _audio(1.5), 16000)
    (tmp_path / "clips" / "notes.txt").write_text("not audio")
    # --audio a folder: its audio files
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--model", str(out[None][0]),
                           "--compare", str(out["w4-sc16"][0]), "--audio", str(tmp_path / "clips"), "--json", "--profile",
                           "--rounds", "2", "--chunk-ms", str(40 * CFG.chunk)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["policy"] for r in rows] == ["fp32", "w4-sc16"]
    for r in rows:
        assert r["rtf"] > 0 and r["file_bytes"] > 0 and r["chunk_ms"] == 40 * CFG.chunk
        assert 0 < r["chunk_latency_ms"]["p50"] <= r["chunk_latency_ms"]["p99"]
        assert r["peak_rss_mb"] > 0 and r["load_seconds"] > 0
        ops = {p["op"]: p for p in r["op_profile"]}  # LiteRT's per-op-type profile
        assert ops and all(p["calls"] > 0 and p["ms_per_step"] >= 0 for p in ops.values())
    assert "TFQ_FULLY_CONNECTED" in {p["op"] for p in rows[1]["op_profile"]}
    assert "TFQ_FULLY_CONNECTED" not in {p["op"] for p in rows[0]["op_profile"]}
    assert rows[0]["rtf_ratio"] == 1.0
    # the same audio through the C streaming core (tfq_transcribe, built by make native)
    assert all(r["c_rtf"] > 0 and r["c_audio_seconds"] == 1.5 for r in rows)
    assert rows[0]["c_rtf_ratio"] == 1.0
    assert all(r["rounds"] == 2 for r in rows)  # the fastest of two interleaved rounds


def test_benchmark_refuses_files_of_another_chunk(exported, tmp_path):
    from tests.tool_runner import assert_one_line_error, run_tool
    _, out = exported
    fp32, w4 = str(out[None][0]), str(out["w4-sc16"][0])
    # refused before anything is measured, naming the file, its chunk and the chunk asked for
    assert_one_line_error(run_tool("benchmark.py", "--model", fp32, "--compare", w4, "--chunk-ms", "320"),
                          fp32, f"{40 * CFG.chunk} ms", "--chunk-ms 320")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    assert_one_line_error(run_tool("benchmark.py", "--model", fp32, "--compare", garbage, "--chunk-ms",
                                   str(40 * CFG.chunk)), "garbage.tflite", "not a readable .tflite")
    assert_one_line_error(run_tool("benchmark.py", "--model", fp32, "--chunk-ms", "0"), "--chunk-ms 0")
    # counts below their least value are refused by name, not met by a ZeroDivisionError deep inside
    for option, value in (("--threads", "0"), ("--feed-ms", "0"), ("--repeat", "0"), ("--long-audio", "-1")):
        assert_one_line_error(run_tool("benchmark.py", "--model", fp32, option, value), f"{option} {value}")
    # an unwritable --json is refused before the measuring, not by a traceback after it
    assert_one_line_error(run_tool("benchmark.py", "--model", fp32, "--json", tmp_path / "none" / "r.json"),
                          "--json", "does not exist")


def test_lstm_kernels_are_packed_on_the_float_activation_path(tmp_path):
    from tfq_asr.quant.apply import quantize
    from tfq_asr.models.streaming import build_step_model, run_streaming_keras, transfer_weights
    cfg = dataclasses.replace(get_config("lstm-xs"), num_layers=2, units=24)
    keras.utils.set_random_seed(5)
    km = build_model(cfg)
    m = AsrModel("tiny-lstm", cfg, km)
    path = tmp_path / "lstm-w4.tflite"
    for bad in (0, -1, 2.5):  # refused by name, not a Keras error from inside the unrolled LSTM
        with pytest.raises(ValueError, match="lstm_steps"):
            export_streaming(m, path, policy="w4-wo", lstm_steps=bad)
    rep = export_streaming(m, path, policy="w4-wo", lstm_steps=8)
    assert {"lstm0/kernel", "lstm0/recurrent_kernel", "lstm1/kernel", "lstm1/recurrent_kernel"} <= set(rep["layers"])
    # the input kernel: one op over the 8 steps (_batch_unpacked_rows); the recurrent one per step
    assert rep["layers"]["lstm0/kernel"]["ops"] == 1 and rep["layers"]["lstm0/kernel"]["batched_rows"] == 8
    assert rep["layers"]["lstm0/recurrent_kernel"]["ops"] == 8 and rep["layers"]["lstm0/kernel"]["float_activations"]
    assert not rep["float_kernels"]
    fp32 = tmp_path / "lstm-fp32.tflite"
    export_streaming(m, fp32, lstm_steps=8)
    assert path.stat().st_size < 0.5 * fp32.stat().st_size  # kernels stored once, packed (tiny model: overheads)
    step = quantize(build_step_model(cfg, 8), "w4-wo")
    transfer_weights(quantize(km, "w4-wo"), step)
    feats = np.random.default_rng(0).normal(size=(3 * 32, 80)).astype(np.float32)
    want = run_streaming_keras(step, cfg, feats)
    r = Recognizer(path)
    state, got = r.initial_state(), []
    for i in range(0, len(feats), 32):
        logits, state = r.step(feats[i:i + 32], state)
        got.append(logits)
    # float activations everywhere: no int8 rounding to flip, only float summation order differs
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
