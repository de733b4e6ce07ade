#!/usr/bin/env python3
"""`make demo`: the bundled Conformer transcribes the bundled utterances; prints WER, CER, RTF."""
from __future__ import annotations

from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import cli_main  # noqa: E402

DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "tfq_asr" / "data" / "demo" / "demo.tsv"


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="conformer-ctc-xs")
    ap.add_argument("--manifest", type=Path, default=DEMO_MANIFEST)
    args = ap.parse_args(argv)
    from tfq_asr.eval.evaluate import evaluate_manifest
    result = evaluate_manifest(args.model, args.manifest, progress=False)
    for r in result["utterances"]:
        print(f"{Path(r['audio']).name}  [{r['subset']}]\n  ref: {r['ref']}\n  hyp: {r['hyp']}")
    o = result["overall"]
    print()
    print("| model | utterances | audio s | WER % | CER % | RTF (1 process, float Keras) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {result['model']} | {o['utterances']} | {result['audio_seconds']:.1f} | {o['wer']:.2f} | "
          f"{o['cer']:.2f} | {result['rtf']:.4f} |")


if __name__ == "__main__":
    cli_main(main)
