"""The command-line tools: JSON output, and one-line errors with a non-zero exit for bad input."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from tests.tool_runner import assert_one_line_error, run_tool


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tfq_asr.models import AsrModel, CONFIGS, build_model, save_model
    cfg = dataclasses.replace(CONFIGS["conformer-xs"], num_blocks=1, d_model=32, num_heads=2)
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_model(AsrModel("tiny", cfg, build_model(cfg)), folder)
    return folder


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("audio") / "tone.wav"
    t = np.arange(22050) / 22050
    sf.write(p, np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 300 * t)], 1) * 0.3, 22050)
    return p


def test_transcribe_json(tiny_model_dir, wav):
    proc = run_tool("transcribe.py", "--model", tiny_model_dir, "--json", wav, wav)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["audio"] for r in rows] == [str(wav)] * 2
    assert all(isinstance(r["text"], str) for r in rows)


def test_transcribe_missing_file(tiny_model_dir, tmp_path):
    # a real process: the exit status the shell sees
    proc = run_tool("transcribe.py", "--model", tiny_model_dir, tmp_path / "nope.wav", isolated=True)
    assert_one_line_error(proc, "not found", "nope.wav", status=2)


def test_transcribe_empty_and_unreadable_files(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    assert_one_line_error(run_tool("transcribe.py", "--model", tiny_model_dir, empty), "empty", "empty.wav")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all")
    assert_one_line_error(run_tool("transcribe.py", "--model", tiny_model_dir, garbage), "cannot read", "garbage.flac")
    assert_one_line_error(run_tool("transcribe.py", "--model", tiny_model_dir, tmp_path), "is a folder", str(tmp_path))
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    assert_one_line_error(run_tool("transcribe.py", "--model", tiny_model_dir, zero), "zero.wav")


def test_unknown_model(wav):
    assert_one_line_error(run_tool("transcribe.py", "--model", "no-such-model", wav), "unknown model", "no-such-model")


def test_bad_beams_and_limits_are_refused_before_any_work(tiny_model_dir, wav, tiny_corpus):
    assert_one_line_error(run_tool("transcribe.py", "--model", tiny_model_dir, "--beam", "-2", wav), "beam_width = -2")
    out, _ = tiny_corpus
    assert_one_line_error(run_tool("evaluate.py", "--model", tiny_model_dir, "--manifest", out / "test.tsv",
                                   "--beam", "-1"), "beam_width = -1")
    # a negative --limit used to drop utterances from the end (a slice), 0 meant all of them
    for limit in ("-2", "0"):
        assert_one_line_error(run_tool("evaluate.py", "--model", tiny_model_dir, "--manifest", out / "test.tsv",
                                       "--limit", limit), f"--limit {limit}: must be at least 1")


def test_evaluate_bad_manifest(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\twords\nx.flac\thello\n")
    assert_one_line_error(run_tool("evaluate.py", "--model", tiny_model_dir, "--manifest", bad), "lacks column")
    assert_one_line_error(run_tool("evaluate.py", "--model", tiny_model_dir, "--manifest", tmp_path / "none.tsv"),
                          "not found")


def test_evaluate_json_per_subset(tiny_model_dir, tiny_corpus):
    out, _ = tiny_corpus
    proc = run_tool("evaluate.py", "--model", tiny_model_dir, "--manifest", out / "test.tsv", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["overall"]["utterances"] == 3
    assert set(result["subsets"]) <= {"espeak", "flite", "festival"}
    assert sum(s["utterances"] for s in result["subsets"].values()) == 3


def test_convert_streaming_policy_and_baseline(tiny_model_dir, tmp_path, wav):
    out = tmp_path / "w4.tflite"
    proc = run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w4-sc16", "--streaming", "--out", out,
                    "--report", tmp_path / "w4.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "w4.json").read_text())
    assert report["size_bytes"] == out.stat().st_size and report["policy"] == "w4-sc16"
    assert "block0_ff1_dense1" in report["layers"] and report["streaming"]
    base = tmp_path / "int8.tflite"
    proc = run_tool("convert.py", "--model", tiny_model_dir, "--policy", "litert-int8", "--streaming", "--out", base)
    assert proc.returncode == 0, proc.stderr
    from tfq_asr.streaming import Recognizer
    for path in (out, base):
        assert isinstance(Recognizer(path).transcribe(np.zeros(8000, np.float32)), str)
    proc = run_tool("transcribe.py", "--model", out, "--json", wav)  # 22.05 kHz stereo: resampled, mixed down
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip())["audio"] == str(wav)
    assert_one_line_error(run_tool("transcribe.py", "--model", tmp_path / "missing.tflite", wav), "no such model file")


def test_convert_errors(tiny_model_dir, tmp_path):
    # a real process: native start-up logging stays off stderr
    assert_one_line_error(run_tool("convert.py", "--model", "conformer-m", "--policy", "w4", "--out",
                                   tmp_path / "m.tflite", isolated=True), "--random-weights", status=2)
    assert_one_line_error(run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w3", "--out", tmp_path / "x.tflite"),
                          "bits")
    assert_one_line_error(run_tool("convert.py", "--model", tiny_model_dir, "--out", tmp_path), "is a directory")
    # options that would be ignored, contradict each other or divide by zero are refused by name
    out = tmp_path / "y.tflite"
    for extra, message in ((["--streaming", "--input-frames", "100"], "--input-frames applies to offline"),
                           (["--float-convs", "--int8-convs"], "contradict"),
                           (["--calibration", "synthetic", "--num-calibration", "4"], "--num-calibration applies"),
                           (["--calibration", tmp_path, "--num-calibration", "0"], "--num-calibration 0")):
        assert_one_line_error(run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w4", "--out", out,
                                       *extra), message)
    for extra, message in ((["--num-calibration", "0"], "--num-calibration 0"), (["--lr", "-1"], "--lr -1.0"),
                           (["--method", "qat", "--train", tmp_path / "t.tsv", "--augment", '{"time_stretch": 1}'],
                            "time_stretch = 1: must be in")):
        assert_one_line_error(run_tool("quantize.py", "--model", tiny_model_dir, "--policy", "w4", "--out",
                                       tmp_path / "q", *extra), message)
    assert_one_line_error(run_tool("quantize.py", "--model", tiny_model_dir, "--policy", "auto:100000:w9", "--out",
                                   tmp_path / "q"), "policy 'w9'")  # was a ValueError traceback
    # the input model is never overwritten: not its files, not its folder (a conversion used to
    # write a .tflite over the model's weights.npz when --out named it)
    weights = (tiny_model_dir / "weights.npz").read_bytes()
    assert_one_line_error(run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w4", "--out",
                                   tiny_model_dir / "weights.npz"), "would overwrite the input model")
    assert_one_line_error(run_tool("quantize.py", "--model", tiny_model_dir, "--policy", "w4", "--method", "none",
                                   "--out", tiny_model_dir), "would overwrite the input model")
    assert (tiny_model_dir / "weights.npz").read_bytes() == weights
    assert_one_line_error(run_tool("train.py", "--model", "conformer-xs", "--train", tmp_path / "t.tsv", "--out",
                                   tmp_path / "run", "--freq-warp", "1.2"), "freq_warp = 1.2")
    assert not list(tmp_path.glob("*.tflite")) and not (tmp_path / "q").exists() and not (tmp_path / "run").exists()


def test_offline_tflite_through_transcribe_and_evaluate(tiny_model_dir, tiny_corpus, tmp_path, wav):
    out = tmp_path / "offline.tflite"
    proc = run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w4", "--input-frames", 1200, "--out", out)
    assert proc.returncode == 0, proc.stderr
    proc = run_tool("transcribe.py", "--model", out, "--json", wav)  # 1 s: padded to the file's 12 s
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout)["text"], str)
    corpus, _ = tiny_corpus
    proc = run_tool("evaluate.py", "--model", out, "--manifest", corpus / "test.tsv", "--json")
    if proc.returncode == 0:
        assert json.loads(proc.stdout)["overall"]["utterances"] == 3
    else:  # a test utterance longer than 12 s: refused by name, never cropped
        assert_one_line_error(proc, "longer than this offline file's fixed input")
    assert_one_line_error(run_tool("convert.py", "--model", tiny_model_dir, "--policy", "litert-int3",
                                   "--out", tmp_path / "x.tflite"), "unknown baseline")
    # offline metadata missing a field: refused naming the file and the field (was a KeyError)
    broken = tmp_path / "no-subsampling.tflite"
    data = out.read_bytes()
    assert b'"subsampling": ' in data
    broken.write_bytes(data.replace(b'"subsampling": ', b'"subsamplinx": ', 1))
    assert_one_line_error(run_tool("transcribe.py", "--model", broken, wav), "no-subsampling.tflite",
                          "offline metadata has no subsampling", status=2)
    # the benchmark streams: an offline file is refused in the child's own words, once (the
    # parent wrapped them: "error: F: benchmark failed: error: F: not a streaming model")
    proc = run_tool("benchmark.py", "--model", out, "--audio", wav)
    assert_one_line_error(proc, f"{out}: not a streaming model", status=2)
    assert proc.stderr.count("error:") == 1 and "benchmark failed" not in proc.stderr


def test_a_failing_op_is_a_one_line_error(tiny_model_dir, tmp_path, wav):
    """A file whose packed layer is corrupted loads but fails while running: transcribe.py
    says which file and layer in one line and exits 1 (not a traceback)."""
    from tests.test_lowering import corrupt_header
    good, bad = tmp_path / "w4.tflite", tmp_path / "bad.tflite"
    proc = run_tool("convert.py", "--model", tiny_model_dir, "--policy", "w4", "--streaming", "--out", good)
    assert proc.returncode == 0, proc.stderr
    corrupt_header(good, bad, "block0_ff1_dense1", 2, 3)  # 3 bits: no such format
    proc = run_tool("transcribe.py", "--model", bad, wav, isolated=True)  # nothing native on stderr either
    assert_one_line_error(proc, str(bad), "block0_ff1_dense1", "bits 3", status=1)


def test_bundle_name_cannot_leave_the_pretrained_folder(tmp_path):
    for name in ("../outside", "a/b", ""):
        assert_one_line_error(run_tool("bundle_model.py", "--model", tmp_path, "--name", name, "--test",
                                       tmp_path / "t.tsv"), "--name", "tfq_asr/pretrained")
