#!/usr/bin/env python3
"""Turn a trained model folder into a bundled model: float16 weights in tfq_asr/pretrained/NAME,
evaluated on the test split, with a model card carrying the measured figures.

    python tools/bundle_model.py --model runs/conformer-xs/model --name conformer-ctc-xs \
        --test data/corpus/test.tsv --corpus-log data/corpus.log
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, cli_main  # noqa: E402

DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "tfq_asr" / "data" / "demo" / "demo.tsv"


def corpus_summary(manifests: list[Path]) -> list[str]:
    from tfq_asr.manifest import read_manifest
    lines = []
    for m in manifests:
        utts = read_manifest(m)
        hours = sum(u.duration for u in utts) / 3600
        engines = sorted({u.engine for u in utts})
        voices = len({(u.engine, u.voice) for u in utts})
        lines.append(f"| {m.stem} | {len(utts)} | {hours:.2f} | {voices} | {', '.join(engines)} |")
    return lines


def card(name: str, model, meta: dict, results: dict, corpus_lines: list[str]) -> str:
    tr = meta.get("training", {})
    cfg = tr.get("config", {})
    rows = [f"| {split} | {r['overall']['utterances']} | {r['overall']['wer']:.2f} | {r['overall']['cer']:.2f} |"
            for split, r in results.items()]
    sub = [f"| {split}/{s} | {v['utterances']} | {v['wer']:.2f} | {v['cer']:.2f} |"
           for split, r in results.items() for s, v in r["subsets"].items()]
    return "\n".join([
        f"# {name}", "",
        f"{model.config.kind} CTC recognizer, {model.keras_model.count_params():,} parameters, "
        "character vocabulary (blank, space, apostrophe, a-z), 16 kHz 80-bin log-mel input.",
        "Weights stored as float16 (`weights.npz`); every figure below is measured with them.", "",
        "## Architecture", "", "```", json.dumps(meta["model"], indent=1), "```", "",
        "## Data", "",
        "Synthetic speech made by `tools/make_corpus.py` (seed 0) from Debian's fortune sentences: espeak-ng, "
        "flite and festival voices at random rate and pitch, speed perturbation, gain and light noise. "
        "The test split has held-out sentences and held-out voices (espeak's Caribbean accent, the espeak "
        "variants f4, m6, Annie and norbert, flite rms, festival ked_diphone).", "",
        "| split | utterances | hours | voices | engines |", "|---|---:|---:|---:|---:|", *corpus_lines, "",
        *(quant_section(meta["quantization"]) if meta.get("quantization") else training_section(tr, cfg)),
        "## Accuracy (greedy CTC decoding, float16-stored weights, " + ("quantized" if meta.get("quantization") else "float")
        + " compute)", "",
        "| split | utterances | WER % | CER % |", "|---|---:|---:|---:|", *rows, "",
        "| split/engine | utterances | WER % | CER % |", "|---|---:|---:|---:|", *sub, "",
        "Reproduce: `python tools/evaluate.py --model " + name + " --manifest data/corpus/test.tsv` "
        "(and `data/corpus/dev.tsv`) after `python tools/make_corpus.py --out data/corpus --train 24000 --dev 300 "
        "--test 400 --only dev test` (the splits of the training corpus, without its 24000 training utterances).", ""])


def quant_section(q: dict) -> list[str]:
    from tfq_asr.quant.policy import Policy
    policy = Policy.from_dict(q["policy"])
    lines = ["## Quantization", "", f"Method: {q.get('method')} from `{q.get('source')}`"
             + (f", {q['qat_steps']} QAT steps at peak learning rate {q['qat_lr']}" if q.get("qat_steps") else "")
             + f"; calibration utterances: {q.get('calibration_utterances')}.",
             "Latent weights are stored as float16 and re-quantized on load with the stored clipping factors; "
             "the figures below are measured on exactly that model.", "", "```", policy.describe(), "```", ""]
    return lines


def training_section(tr: dict, cfg: dict) -> list[str]:
    return [
        "## Training", "",
        f"CTC, Adam (peak learning rate {cfg.get('peak_lr')}, {cfg.get('warmup')} warmup steps, cosine decay), "
        "SpecAugment" + (", voice augmentation (mel-axis warp, spectral tilt, time stretch)" if cfg.get("freq_warp") else "")
        + f", batches of up to {cfg.get('batch_frames')} frames; `tools/train.py` on a 2-core CPU.",
        f"Best dev checkpoint: step {tr.get('step')}, {tr.get('minutes', 0):.0f} minutes of training, "
        f"{tr.get('audio_hours_seen', 0):.0f} hours of audio seen, dev WER {tr.get('dev_wer', float('nan')):.2f}% "
        "(on 200 dev utterances, greedy).", ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="trained model folder (tools/train.py --export)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--test", type=Path, required=True, help="test manifest")
    ap.add_argument("--dev", type=Path, help="dev manifest (also reported)")
    ap.add_argument("--train", type=Path, help="train manifest (described in the card)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", args.name):  # a folder of tfq_asr/pretrained, nowhere else
        raise UserError(f"--name {args.name!r}: use lower-case letters, digits, '.', '_' and '-' "
                        "(it names a folder of tfq_asr/pretrained)")
    from tfq_asr.eval.evaluate import evaluate_manifest
    from tfq_asr.models import PRETRAINED_DIR, load_model, save_model

    src = load_model(args.model)
    meta = json.loads((args.model / "config.json").read_text())
    dst = PRETRAINED_DIR / args.name
    src.name = args.name
    extra = {k: v for k, v in meta.items() if k == "training"}  # "quantization" travels with the model
    save_model(src, dst, extra, dtype="float16")
    model = load_model(dst)  # evaluate exactly what ships
    results = {}
    for split, m in (("test", args.test), ("dev", args.dev)):
        if m:
            results[split] = evaluate_manifest(model, m)
    manifests = [m for m in (args.train, args.dev, args.test) if m]
    (dst / "MODEL_CARD.md").write_text(card(args.name, model, meta, results, corpus_summary(manifests)))
    summary = {s: {k: r["overall"][k] for k in ("wer", "cer", "utterances")} for s, r in results.items()}
    # Golden transcripts of the bundled demo audio: tests check the shipped model reproduces them.
    demo = evaluate_manifest(model, DEMO_MANIFEST, progress=False)
    summary["demo"] = {k: demo["overall"][k] for k in ("wer", "cer", "utterances")}
    (dst / "demo_transcripts.json").write_text(json.dumps(
        {Path(r["audio"]).name: r["hyp"] for r in demo["utterances"]}, indent=1) + "\n")
    (dst / "config.json").write_text(json.dumps({**json.loads((dst / "config.json").read_text()),
                                                 "evaluation": summary}, indent=2) + "\n")
    print(json.dumps({"bundled": str(dst), **summary}, indent=2))
    if not results:
        raise UserError("no manifest evaluated")


if __name__ == "__main__":
    cli_main(main)
