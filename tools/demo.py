#!/usr/bin/env python3
"""`make demo`: the bundled Conformer, float and quantized (the bundled w4 and w2 QAT checkpoints),
transcribes the bundled held-out utterances; prints each transcript and a table of weight bytes,
WER, CER and real-time factor."""
from __future__ import annotations

from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import cli_main  # noqa: E402

DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "tfq_asr" / "data" / "demo" / "demo.tsv"
DEFAULT_MODELS = ("conformer-ctc-xs", "conformer-ctc-xs-w4", "conformer-ctc-xs-w2")


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), help="bundled names or model folders")
    ap.add_argument("--manifest", type=Path, default=DEMO_MANIFEST)
    args = ap.parse_args(argv)
    from tfq_asr.eval.evaluate import evaluate_manifest
    from tfq_asr.models import list_pretrained, load_pretrained
    from tfq_asr.quant.apply import as_policy
    from tfq_asr.quant.size import size_report
    from tfq_asr.models import build_model
    available = set(list_pretrained())
    names = [m for m in args.models if m in available or Path(m).is_dir()]
    rows = []
    for i, name in enumerate(names):
        model = load_pretrained(name)
        result = evaluate_manifest(model, args.manifest, progress=False)
        if i == 0:
            for r in result["utterances"]:
                print(f"{Path(r['audio']).name}  [{r['subset']}]\n  ref: {r['ref']}\n  hyp: {r['hyp']}")
        policy = as_policy(model.quantization["policy"] if model.quantization else "fp32")
        size = size_report(build_model(model.config), policy)
        method = model.quantization.get("method", "") if model.quantization else "float"
        rows.append((result["model"], policy.name, method, size["total_bytes"], result))
    print()
    print("| model | policy | method | weight bytes | utterances | WER % | CER % | RTF (Keras, 1 process) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, policy, method, nbytes, result in rows:
        o = result["overall"]
        print(f"| {name} | {policy} | {method} | {nbytes:,} | {o['utterances']} | {o['wer']:.2f} | "
              f"{o['cer']:.2f} | {result['rtf']:.4f} |")


if __name__ == "__main__":
    cli_main(main)
