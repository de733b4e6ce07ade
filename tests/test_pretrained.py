"""The bundled models load by name and reproduce their recorded transcripts of the bundled audio."""
import json

import pytest

from tfq_asr.audio import load_audio
from tfq_asr.eval.metrics import error_rates
from tfq_asr.manifest import read_manifest
from tfq_asr.models import PRETRAINED_DIR, list_pretrained, load_pretrained
from tests.conftest import ROOT

DEMO = ROOT / "tfq_asr" / "data" / "demo" / "demo.tsv"
BUNDLED = ["conformer-ctc-xs", "lstm-ctc-xs"]


def test_quantized_bundles_load_as_quantized_models():
    from tfq_asr.quant.apply import wrappers
    quantized = [n for n in list_pretrained() if n.rsplit("-", 1)[-1] in ("w4", "w2", "w8")]
    for name in quantized:
        model = load_pretrained(name)
        assert model.quantization and model.quantization["policy"]["name"]
        assert wrappers(model.keras_model), name


def test_both_models_are_bundled():
    assert set(BUNDLED) <= set(list_pretrained())
    for name in BUNDLED:
        folder = PRETRAINED_DIR / name
        assert (folder / "MODEL_CARD.md").is_file()
        assert (folder / "weights.npz").stat().st_size < 8_000_000  # a few MB


@pytest.mark.parametrize("name", list_pretrained())
def test_bundled_model_transcribes_the_bundled_audio(name):
    model = load_pretrained(name)
    expected = json.loads((PRETRAINED_DIR / name / "demo_transcripts.json").read_text())
    meta = json.loads((PRETRAINED_DIR / name / "config.json").read_text())
    utts = read_manifest(DEMO)
    hyps = [model.transcribe(load_audio(u.path)) for u in utts]
    assert {u.path.name: h for u, h in zip(utts, hyps)} == expected
    scores = error_rates([u.text for u in utts], hyps)
    assert scores["wer"] == pytest.approx(meta["evaluation"]["demo"]["wer"])
    # The demo utterances are held-out voices and sentences. The bundled models are still
    # undertrained (see their model cards); this bound only says they recognize speech at all.
    assert scores["cer"] < 50.0
