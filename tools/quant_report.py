#!/usr/bin/env python3
"""Accuracy against size of a model under several quantization policies and methods: a table
(Markdown and JSON) of policy, method, bytes, bits per weight, WER and CER on a test manifest,
plus a plot of WER against size.

    python tools/quant_report.py --model conformer-ctc-xs --test data/corpus/test.tsv \
        --calibration data/corpus/dev.tsv --rows fp32:none w8:ptq w8:zero-shot w4:ptq w2-sc64-f16:ptq \
        --checkpoints runs/q/conformer-w4-qat runs/q/conformer-w2-qat --out runs/report/conformer

Rows are POLICY:METHOD with METHOD none (weights only), ptq or zero-shot; --checkpoints adds
quantized checkpoints (e.g. QAT results of tools/quantize.py) evaluated as they are.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.convert.lowering import write_atomically  # noqa: E402
from tfq_asr.errors import UserError, check_option_minimums, cli_main  # noqa: E402

DEFAULT_ROWS = ("fp32:none", "w8:ptq", "w8:zero-shot", "w4:ptq", "w4-sc64-f16:ptq", "w2-sc64-f16:ptq",
                "w2-sc64-asym-clipl2-f16:ptq")


def markdown(model_name: str, rows: list[dict], test: str) -> str:
    float_wer = next((r["wer"] for r in rows if r["policy"] == "fp32"), None)
    lines = [f"{model_name} on {test} ({rows[0]['utterances'] if rows else 0} utterances, greedy decoding)", "",
             "| policy | method | bytes | bits/weight | WER % | CER % | WER vs float |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        rel = "" if float_wer in (None, 0) else f"{100 * (r['wer'] - float_wer) / float_wer:+.1f}% rel"
        lines.append(f"| {r['policy']} | {r['method']} | {r['bytes']:,} | {r['bits_per_weight']:.2f} | "
                     f"{r['wer']:.2f} | {r['cer']:.2f} | {rel} |")
    return "\n".join(lines)


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = [r for r in rows if r["method"] == method]
        ax.scatter([r["bytes"] / 2**20 for r in pts], [r["wer"] for r in pts], label=method)
        for r in pts:
            ax.annotate(r["policy"], (r["bytes"] / 2**20, r["wer"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("weights (MiB, log scale)")
    ax.set_ylabel("WER %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="float model: bundled name or model folder")
    ap.add_argument("--test", type=Path, required=True, help="test manifest")
    ap.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), help="POLICY:METHOD entries")
    ap.add_argument("--checkpoints", nargs="*", default=[], type=Path, help="quantized checkpoint folders")
    ap.add_argument("--calibration", type=Path, help="manifest for ptq calibration")
    ap.add_argument("--num-calibration", type=int, default=32)
    ap.add_argument("--limit", type=int, help="score only the first N test utterances")
    ap.add_argument("--out", type=Path, required=True, help="output prefix: writes OUT.md, OUT.json, OUT.png")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    args = ap.parse_args(argv)
    check_option_minimums(args, limit=1, num_calibration=1)

    from tfq_asr.eval.evaluate import evaluate_manifest
    from tfq_asr.models import AsrModel, load_pretrained
    from tfq_asr.quant.apply import as_policy, quantize
    from tfq_asr.quant.size import size_report
    from quantize import load_calibration

    src = load_pretrained(args.model)
    if src.quantization:
        raise UserError(f"--model must be a float model; {args.model} is quantized")
    entries = []
    for row in args.rows:
        policy_name, _, method = row.partition(":")
        method = method or "ptq"
        if method not in ("none", "ptq", "zero-shot"):
            raise UserError(f"row {row!r}: method must be none, ptq or zero-shot (QAT results come as --checkpoints)")
        entries.append((as_policy(policy_name), method, None))
    for folder in args.checkpoints:
        m = load_pretrained(folder)
        if not m.quantization:
            raise UserError(f"{folder}: not a quantized checkpoint")
        if m.config != src.config:
            raise UserError(f"{folder}: architecture differs from {args.model}")
        entries.append((as_policy(m.quantization["policy"]), m.quantization.get("method", "?"), m))
    calibration = None
    if any(method == "ptq" for _, method, _ in entries):
        if not args.calibration:
            raise UserError("ptq rows need --calibration MANIFEST")
        calibration = load_calibration(args.calibration, args.num_calibration, args.cache_dir)
    rows = []
    for policy, method, ready in entries:
        print(f"== {policy.name} {method}", file=sys.stderr)
        if ready is not None:
            model = ready
        elif policy.default is None and not policy.rules:
            model = src
        else:
            calib = {"none": None, "ptq": calibration, "zero-shot": "synthetic"}[method]
            model = AsrModel(f"{src.name}-{policy.name}-{method}", src.config,
                             quantize(src.keras_model, policy, calib))
        result = evaluate_manifest(model, args.test, limit=args.limit)
        size = size_report(src.keras_model, policy)
        rows.append({"policy": policy.name, "method": method, "bytes": size["total_bytes"],
                     "bits_per_weight": size["bits_per_weight"], "wer": result["overall"]["wer"],
                     "cer": result["overall"]["cer"], "utterances": result["overall"]["utterances"],
                     "subsets": result["subsets"], "policy_detail": policy.to_dict()})
        print(f"   {rows[-1]['wer']:.2f}% WER, {rows[-1]['bytes']:,} bytes", file=sys.stderr)
    md = markdown(src.name, rows, str(args.test))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out.with_suffix(".md"), (md + "\n").encode())
    write_atomically(args.out.with_suffix(".json"), (json.dumps({"model": src.name, "test": str(args.test),
                                                              "rows": rows}, indent=2) + "\n").encode())
    plot(rows, f"{src.name}: WER against size", args.out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    cli_main(main)
