"""tools/exactness.py / tfq_asr.eval.exactness: the streaming file against its Keras step model."""
from __future__ import annotations

import numpy as np

from tests.conftest import ROOT
from tests.tool_runner import assert_one_line_error, run_tool

DEMO_TSV = ROOT / "tfq_asr" / "data" / "demo" / "demo.tsv"


def test_streaming_file_tracks_its_keras_step_model(w2_stream_model):
    from tfq_asr.eval.exactness import compare_streaming
    from tfq_asr.models import load_pretrained
    r = compare_streaming(load_pretrained("conformer-ctc-xs-w2"), w2_stream_model, DEMO_TSV, limit=2,
                          progress=False)
    assert r["utterances"] == 2 and r["policy"].startswith("w2")
    for row in r["rows"]:
        assert row["keras"] and row["tflite"]
        # same model, same chunks: the logits differ only through float and int8-rounding detail
        assert row["max_logit_diff"] < 0.1 * row["logit_scale"], row
    assert 0 <= r["identical"] <= 2 and np.isfinite(r["wer_keras"])


def test_keras_against_itself_one_ulp_up(w2_stream_model):
    """versus="keras_ulp": the Keras step model against itself on features one ulp up, the
    yardstick for the file's differences. The logits move (the int8 quantizers round) but
    stay close; unknown modes are refused."""
    import pytest
    from tfq_asr.eval.exactness import compare_streaming, nudged_one_ulp
    from tfq_asr.models import load_pretrained
    r = compare_streaming(load_pretrained("conformer-ctc-xs-w2"), w2_stream_model, DEMO_TSV, limit=1,
                          progress=False, versus="keras_ulp")
    assert r["versus"] == "keras_ulp" and "wer_keras_ulp" in r and "wer_tflite" not in r
    row = r["rows"][0]
    assert row["keras_ulp"] and row["keras"] and 0 < row["max_logit_diff"] < 0.1 * row["logit_scale"], row

    class Echo:
        def step(self, frames, state):
            return frames, state

    x = np.array([[1.0, -2.0, 0.0]], np.float32)
    out, _ = nudged_one_ulp(Echo()).step(x, {})
    assert out.dtype == np.float32 and np.array_equal(out, np.nextafter(x, np.float32(np.inf)))
    with pytest.raises(ValueError, match="versus='onnx'"):
        compare_streaming(None, w2_stream_model, DEMO_TSV, versus="onnx")


def test_cli_refuses_a_missing_file(tmp_path):
    res = run_tool("exactness.py", "--model", "conformer-ctc-xs-w2", "--tflite", tmp_path / "nope.tflite",
                   "--manifest", DEMO_TSV)
    assert_one_line_error(res, "nope.tflite: no such file", status=2)
