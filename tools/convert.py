#!/usr/bin/env python3
"""Lower a recognizer to a .tflite: quantized Dense layers as packed int4/int2 custom ops, or a
LiteRT-native baseline, streaming (one chunk per call, explicit state) or offline (fixed length).

    python tools/convert.py --model conformer-ctc-xs-w2 --streaming --out w2.tflite
    python tools/convert.py --model conformer-ctc-xs --policy w4-sc64-f16 --calibration data/corpus/dev.tsv \
        --streaming --out w4.tflite --report w4.json
    python tools/convert.py --model conformer-ctc-xs --policy litert-int8 --streaming --out int8.tflite
    python tools/convert.py --model conformer-m --random-weights --policy w2-sc64-f16 --streaming --out m-w2.tflite

--model: a bundled name, a model folder, a quantized checkpoint (its own policy is used; --policy
must then be omitted or equal), or a configuration name (conformer-m, ...) which needs
--random-weights (speed measurements only: such a file transcribes nothing).
--policy: a quantization policy (w8, w4, w2-sc64-asym-clipl2-f16, ...) or a baseline: fp32,
litert-int8 (TFLite converter dynamic range), litert-int4 / litert-int4-b32 (ai-edge-quantizer).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, cli_main  # noqa: E402


def load_source(name: str, random_weights: bool):
    from tfq_asr.models import AsrModel, CONFIGS, build_model, get_config, load_pretrained
    if name in CONFIGS and not Path(name).exists():
        if not random_weights:
            raise UserError(f"--model {name} is a configuration, not a trained model: pass --random-weights "
                            "to build it with random weights (speed measurements only)")
        cfg = get_config(name)
        return AsrModel(f"{name}-random", cfg, build_model(cfg))
    if random_weights:
        raise UserError("--random-weights applies to configuration names only (e.g. conformer-m)")
    return load_pretrained(name)


def layer_table(report: dict) -> list[str]:
    rows = ["| layer | bits | group | bytes packed | bytes as float | ops |", "|---|---:|---:|---:|---:|---:|"]
    for name, info in report.get("layers", {}).items():
        rows.append(f"| {name} | {info.get('bits')} | {info.get('group_size')} | {info.get('bytes', 0):,} | "
                    f"{info.get('float_bytes', 0):,} | {info.get('ops', 1)} |")
    for k in report.get("float_kernels", []):
        rows.append(f"| {k['layer']}/{k['role']} | {k['bits']} (stored float: {k['why']}) | | | | |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--policy", help="quantization policy or baseline (default: the checkpoint's, else fp32)")
    ap.add_argument("--out", type=Path, required=True, help="output .tflite")
    ap.add_argument("--calibration", help="manifest of calibration utterances, or 'synthetic' (zero-shot)")
    ap.add_argument("--num-calibration", type=int, default=32)
    ap.add_argument("--streaming", action="store_true", help="write the streaming step model")
    ap.add_argument("--input-frames", type=int, default=1000, help="offline files: fixed input length in 10 ms frames")
    ap.add_argument("--random-weights", action="store_true", help="allow a configuration name (random weights)")
    ap.add_argument("--report", type=Path, help="write the report as JSON here")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    args = ap.parse_args(argv)

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a directory; give a .tflite file name")
    if not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: directory {args.out.parent} does not exist")
    from tfq_asr.convert.baselines import BASELINES, export_streaming_baseline, write_baseline
    from tfq_asr.convert.export import convert, export_streaming
    from tfq_asr.models import build_model
    from tfq_asr.quant.apply import as_policy, quantize
    from tfq_asr.quant.size import size_report

    src = load_source(args.model, args.random_weights)
    if src.quantization:
        own = src.quantization["policy"]["name"]
        if args.policy and args.policy != own:
            raise UserError(f"--model {args.model} is quantized with {own}; --policy {args.policy} disagrees "
                            "(omit --policy, or start from the float model)")
        kind = "checkpoint"
        policy = as_policy(src.quantization["policy"])
    else:
        kind = "baseline" if (args.policy or "fp32") in BASELINES else "policy"
        policy = None if kind == "baseline" else as_policy(args.policy)
    if args.streaming and not src.config.streaming:
        raise UserError(f"--streaming: {src.name} is not a streaming configuration (chunk = 0)")
    if args.calibration and kind != "policy":
        raise UserError("--calibration applies when quantizing a float model with a policy")

    try:
        if kind == "baseline":
            name = args.policy or "fp32"
            if args.streaming:
                report = export_streaming_baseline(src, args.out, name)
            else:
                report = write_baseline(src.keras_model, args.out, name, input_shape=(1, args.input_frames, 80))
        else:
            model = src
            if kind == "policy":
                calibration = None
                if args.calibration == "synthetic":
                    calibration = "synthetic"
                elif args.calibration:
                    from quantize import load_calibration
                    calibration = load_calibration(Path(args.calibration), args.num_calibration, args.cache_dir)
                from tfq_asr.models import AsrModel
                model = AsrModel(src.name, src.config, quantize(src.keras_model, policy, calibration, progress=True),
                                 quantization={"policy": policy.to_dict(), "method": "ptq" if calibration else "none"})
            if args.streaming:
                report = export_streaming(model, args.out)
            else:
                report = convert(model.keras_model, args.out, input_shape=(1, args.input_frames, 80))
    except ValueError as err:  # lowering / quantizer refusals name the layer
        raise UserError(f"{args.model}: {err}") from None

    accounting = size_report(build_model(src.config), policy or as_policy("fp32"))
    report.update(model=src.name, policy=(policy.name if policy else args.policy or "fp32"),
                  random_weights=args.random_weights, streaming=args.streaming,
                  accounted_bytes=accounting["total_bytes"], bits_per_weight=accounting["bits_per_weight"])
    for line in layer_table(report):
        print(line)
    print(f"{args.out}: {report['size_bytes']:,} bytes ({report['policy']}, "
          f"{'streaming' if args.streaming else f'offline {args.input_frames} frames'}); size accounting "
          f"{report['accounted_bytes']:,} bytes ({report['bits_per_weight']:.2f} bits/weight)"
          + (" [random weights: speed only]" if args.random_weights else ""))
    if args.report:
        from tfq_asr.convert.lowering import write_atomically
        write_atomically(args.report, (json.dumps(report, indent=2, default=str) + "\n").encode())


if __name__ == "__main__":
    cli_main(main)
