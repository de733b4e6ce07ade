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


def test_cli_refuses_a_missing_file(tmp_path):
    res = run_tool("exactness.py", "--model", "conformer-ctc-xs-w2", "--tflite", tmp_path / "nope.tflite",
                   "--manifest", DEMO_TSV)
    assert_one_line_error(res, "nope.tflite: no such file", status=2)
