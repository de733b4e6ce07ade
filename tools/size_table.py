#!/usr/bin/env python3
"""Exact model sizes under quantization policies, for any named configuration (no training).

    python tools/size_table.py --models conformer-s conformer-m conformer-l --policies fp32 w8 w4 w2-sc64-f16
"""
from __future__ import annotations

import argparse
import json

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, cli_main  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["conformer-xs", "conformer-s", "conformer-m", "conformer-l"])
    ap.add_argument("--policies", nargs="+", default=["fp32", "w8", "w4", "w4-sc64-f16", "w2-sc64-f16"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from tfq_asr.models import build_model
    from tfq_asr.quant.policy import from_name
    from tfq_asr.quant.size import size_report
    try:
        policies = [from_name(p) for p in args.policies]
    except ValueError as err:
        raise UserError(str(err)) from None
    rows = []
    for name in args.models:
        model = build_model(name)
        for p in policies:
            r = size_report(model, p)
            rows.append({"model": name, "policy": p.name, "parameters": r["parameters"], "bytes": r["total_bytes"],
                         "bits_per_weight": r["bits_per_weight"]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    fp = {r["model"]: r["bytes"] for r in rows if r["policy"] == "fp32"}
    print("| model | parameters | policy | bytes | MiB | bits/weight | vs fp32 |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        rel = f"{r['bytes'] / fp[r['model']]:.3f}" if r["model"] in fp else "-"
        print(f"| {r['model']} | {r['parameters']:,} | {r['policy']} | {r['bytes']:,} | {r['bytes'] / 2**20:.2f} | "
              f"{r['bits_per_weight']:.3f} | {rel} |")


if __name__ == "__main__":
    cli_main(main)
