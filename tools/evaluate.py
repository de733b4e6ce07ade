#!/usr/bin/env python3
"""Word and character error rates of a model on a manifest, overall and per subset (engine).

    python tools/evaluate.py --model conformer-ctc-xs --manifest data/corpus/test.tsv [--json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import check_option_minimums, cli_main  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundled model name, model folder, or .tflite (streaming or offline)")
    ap.add_argument("--manifest", required=True, type=Path, help="TSV manifest (path, duration, voice, engine, text)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--beam", type=int, default=0, help="CTC prefix beam width (0 = greedy)")
    ap.add_argument("--limit", type=int, help="score only the first N utterances")
    ap.add_argument("--group-by", default="engine", choices=("engine", "voice"), help="subset column")
    args = ap.parse_args(argv)
    check_option_minimums(args, limit=1)
    from tfq_asr.eval.evaluate import evaluate_manifest, format_table
    result = evaluate_manifest(args.model, args.manifest, beam_width=args.beam, limit=args.limit,
                               group_by=args.group_by)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    cli_main(main)
