#!/usr/bin/env python3
"""Lower a recognizer to a .tflite: quantized layers as packed int4/int2 custom ops, or a
LiteRT-native baseline, streaming (one chunk per call, explicit state) or offline (fixed length).

    python tools/convert.py --model conformer-ctc-xs-w2 --streaming --out w2.tflite
    python tools/convert.py --model conformer-ctc-xs --policy w4-sc64-f16 --calibration data/corpus/dev.tsv \
        --streaming --out w4.tflite --report w4.json
    python tools/convert.py --model conformer-ctc-xs --policy litert-int8 --streaming --out int8.tflite
    python tools/convert.py --model conformer-m --random-weights --policy w2-sc64-f16 --streaming --out m-w2.tflite
    python tools/convert.py --model lstm-ctc-xs-w4 --int8-lstm --streaming --out lstm-w4q8.tflite

--model: a bundled name, a model folder, a quantized checkpoint (its own policy is used; --policy
must then be omitted or equal), or a configuration name (conformer-m, ...) which needs
--random-weights (speed measurements only: such a file transcribes nothing, the report says so).
--policy: a quantization policy (w8, w4, w2-sc64-asym-clipl2-f16, ...) or a baseline: fp32,
litert-int8 (TFLite converter dynamic range), litert-int4 (ai-edge-quantizer int4 blocks of 32,
per channel where K is not a multiple of 32), litert-int4-pc (per channel).
--method: ptq (calibrate on --calibration MANIFEST or a folder of audio files), zero-shot (synthetic calibration), none
(weights only). Default: ptq with a manifest or folder, zero-shot with `--calibration synthetic`, else none.
--streaming writes the streaming step model: what tools/transcribe.py, evaluate.py and
benchmark.py run on audio of any length. It is a flag, not the default, so that the command
says which file it writes; without it the file is offline with a fixed input of --input-frames
10 ms frames (default 1000 = 10 s; shorter audio is padded, longer refused by the runners).
The input model is never modified; the output (and --report) are written atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, check_option_minimums, check_output_file, cli_main  # noqa: E402

METHODS = ("ptq", "zero-shot", "none")
DEFAULT_INPUT_FRAMES = 1000  # offline files: 10 s
DEFAULT_CALIBRATION_UTTERANCES = 32


def load_source(name: str, random_weights: bool):
    from tfq_asr.models import AsrModel, CONFIGS, build_model, get_config, load_pretrained
    if name in CONFIGS and not Path(name).exists():
        if not random_weights:
            raise UserError(f"--model {name} is a configuration, not a trained model: pass --random-weights "
                            "to build it with random weights (speed measurements only)")
        import tf_keras as keras
        keras.utils.set_random_seed(0)
        cfg = get_config(name)
        return AsrModel(f"{name}-random", cfg, build_model(cfg))
    if random_weights:
        raise UserError("--random-weights applies to configuration names only (e.g. conformer-m)")
    return load_pretrained(name)


def resolve_policy(name: str | None):
    """(kind, policy or None, display name); unknown names fail before any model is loaded."""
    from tfq_asr.convert.baselines import BASELINES
    from tfq_asr.quant.apply import as_policy
    if name is None:
        return None, None, None
    if name in BASELINES:
        return "baseline", None, name
    if name.startswith("litert-"):
        raise UserError(f"--policy {name}: unknown baseline; expected one of {', '.join(BASELINES)}")
    try:
        policy = as_policy(name)
    except UserError as err:
        raise UserError(f"--policy {name}: {err} (baselines: {', '.join(BASELINES)})") from None
    return "policy", policy, policy.name


REFERENCE_KERNEL = "reference kernel (groups not a multiple of 32)"


def runs_reference_kernel(info: dict) -> bool:
    """Does this packed layer run the plain C loops?  The SIMD kernels (converters/README.md,
    "Which kernel runs") take groups of a multiple of 32 or one group per channel; depthwise
    taps are decoded to float once, so their grouping costs nothing at run time."""
    from tfq_asr.convert.lowering import DW_OP_NAME
    g = info["group_size"]
    return g < info["k"] and g % 32 != 0 and info.get("op") != DW_OP_NAME


def layer_rows(report: dict, file_bytes: bytes, layer_names) -> list[dict]:
    """One row per weight matrix in the file: packed TFQ ops from the lowering report, builtin
    ops (float, or LiteRT's int8/int4) from the file itself, with why a quantized kernel is float."""
    from tfq_asr.convert.baselines import weight_inventory
    rows = []
    for name, info in report.get("layers", {}).items():
        gran = "per channel" if info["group_size"] >= info["k"] else f"groups of {info['group_size']}"
        rows.append({"layer": name, "bits": info["bits"], "bytes": info["bytes"], "float_bytes": info["float_bytes"],
                     "storage": f"packed TFQ op, int{info['bits']} {'sym' if info['symmetric'] else 'asym'} {gran}, "
                                f"{info['scale_dtype']} scales"
                                + (", float activations" if info.get("float_activations") else "")
                                + (", int8 activations at the calibrated scale" if info.get("activation_mode") == "static" else "")
                                + (" (the static input range is not applied)" if info.get("static_range_dropped") else "")
                                + (f", {info['op']}" if "op" in info else "")
                                + (f", {info['ops']} ops" if info.get("ops", 1) > 1 else "")
                                + (f", one op with {' and '.join(info['shares_op_with'])}"
                                   if info.get("shares_op_with") else "")
                                + (f", one op with {info['chained_with']} (swish between)"
                                   if info.get("chained_with") else "")
                                + (f", {REFERENCE_KERNEL}" if runs_reference_kernel(info) else "")})
    why = {k["layer"]: f"quantized to {k['bits']} bits, stored float: {k['why']}" for k in report.get("float_kernels", [])}
    as_int8 = {k["layer"]: f"quantized to 8 bits, dequantized once at load, float activations: {k['why']}"
               for k in report.get("float_kernels", []) if k.get("stored") == "int8"}
    for r in report.get("weights") or weight_inventory(file_bytes, layer_names):
        storage = r["storage"]
        if r["bits"] >= 16:
            storage = f"float{r['bits']}: " + why.get(r["layer"], "not quantized by the policy" if report.get("policy_kind")
                                               != "baseline" else "the baseline leaves it float")
        elif r["layer"] in as_int8:
            storage = f"{storage} + DEQUANTIZE: {as_int8[r['layer']]}"
        rows.append({"layer": r["layer"], "bits": r["bits"], "bytes": r["bytes"], "float_bytes": r["float_bytes"],
                     "storage": storage + (f", {r['ops']} ops" if r.get("ops", 1) > 1 else "")})
    return rows


def streaming_window(src, chunk_ms, left_ms, streaming: bool):
    """The model with the chunk and left context asked for (encoder frames are 40 ms), and the
    LSTM steps per call.  The weights do not depend on them: a Conformer trained with one chunk
    runs with another (accuracy may move; measure it), an LSTM takes any number of steps."""
    from tfq_asr.models import AsrModel
    if chunk_ms is None and left_ms is None:
        return src, 8
    if not streaming:
        raise UserError("--chunk-ms / --left-context-ms apply to --streaming files only")
    for opt, v in (("--chunk-ms", chunk_ms), ("--left-context-ms", left_ms)):
        if v is not None and (v < (40 if opt == "--chunk-ms" else 0) or v % 40):
            raise UserError(f"{opt} {v}: must be a {'positive ' if opt == '--chunk-ms' else ''}multiple of 40 ms "
                            "(one encoder frame: 4 feature frames of 10 ms)")
    cfg = src.config
    if cfg.kind == "lstm":
        if left_ms is not None:
            raise UserError("--left-context-ms: an LSTM has no attention window (its state carries the past)")
        return src, chunk_ms // 40
    changes = {}
    if chunk_ms is not None:
        changes["chunk"] = chunk_ms // 40
    if left_ms is not None:
        changes["left_context"] = left_ms // 40
    return AsrModel(src.name, dataclasses.replace(cfg, **changes), src.keras_model, src.quantization), 8


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundled name, model folder, quantized checkpoint, or "
                    "configuration name with --random-weights")
    ap.add_argument("--policy", help="quantization policy or baseline (default: the checkpoint's, else fp32)")
    ap.add_argument("--out", type=Path, required=True, help="output .tflite")
    ap.add_argument("--calibration", help="manifest or folder of audio files of calibration utterances, "
                    "or 'synthetic' (zero-shot)")
    ap.add_argument("--method", choices=METHODS, help="calibration method (default: from --calibration)")
    ap.add_argument("--num-calibration", type=int, help=f"--calibration MANIFEST|DIR: utterances to calibrate "
                    f"on (default {DEFAULT_CALIBRATION_UTTERANCES})")
    ap.add_argument("--streaming", action="store_true", help="write the streaming step model")
    ap.add_argument("--chunk-ms", type=int, help="--streaming: audio per model step, a multiple of 40 ms "
                    "(default: the model's, 320 ms for the bundled models)")
    ap.add_argument("--left-context-ms", type=int, help="--streaming, Conformer: attention left context, a multiple "
                    "of 40 ms (default: the model's)")
    ap.add_argument("--input-frames", type=int, help="offline files: fixed input length in 10 ms frames "
                    f"(default {DEFAULT_INPUT_FRAMES})")
    ap.add_argument("--float-convs", action="store_true",
                    help="keep quantized Conv2D kernels as builtin float convolutions (larger file; "
                    "XNNPACK's float convolution is faster than our float-activation kernel)")
    ap.add_argument("--int8-convs", action="store_true",
                    help="quantize the inputs of VALID Conv2D layers to int8 per patch too (the -convq8 policy "
                    "suffix; default: convolutions are weight-only); with a quantized checkpoint its integer "
                    "weights are kept and only the convolutions' inputs change (post-training)")
    ap.add_argument("--int8-lstm", action="store_true",
                    help="quantize the LSTMs' inputs and states to int8 per step (the -lstmq8 policy suffix; "
                    "default: LSTM kernels are weight-only, on float activations); with a quantized "
                    "checkpoint its integer weights are kept (post-training)")
    ap.add_argument("--random-weights", action="store_true", help="allow a configuration name (random weights)")
    ap.add_argument("--report", type=Path, help="write the report as JSON here")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    args = ap.parse_args(argv)

    from tfq_asr.models.bundle import check_not_input
    for option, path in (("--out", args.out), ("--report", args.report)):
        if path is not None:
            check_output_file(option, path)
            check_not_input(option, path, args.model)
    check_option_minimums(args, input_frames=1, num_calibration=1)
    if args.streaming and args.input_frames is not None:
        raise UserError("--input-frames applies to offline files only; a --streaming file takes "
                        "audio of any length (its step is --chunk-ms)")
    args.input_frames = args.input_frames or DEFAULT_INPUT_FRAMES
    if args.float_convs and args.int8_convs:
        raise UserError("--float-convs and --int8-convs contradict each other: the first keeps the "
                        "convolutions as float builtins, the second quantizes their inputs for our op")
    method = args.method or ("zero-shot" if args.calibration == "synthetic" else "ptq" if args.calibration else "none")
    if args.num_calibration is not None and method != "ptq":
        raise UserError(f"--num-calibration applies to --calibration MANIFEST|DIR (method ptq), not to "
                        f"method {method}")
    args.num_calibration = args.num_calibration or DEFAULT_CALIBRATION_UTTERANCES
    if method == "ptq" and (not args.calibration or args.calibration == "synthetic"):
        raise UserError("--method ptq needs --calibration MANIFEST|DIR (or use --method zero-shot)")
    if method == "none" and args.calibration:
        raise UserError("--calibration given with --method none")
    if method == "zero-shot" and args.calibration not in (None, "synthetic"):
        raise UserError("--method zero-shot generates its own inputs: drop --calibration")
    kind, policy, policy_name = resolve_policy(args.policy)

    from tfq_asr.convert.baselines import export_streaming_baseline, write_baseline
    from tfq_asr.convert.export import convert, export_streaming, offline_metadata
    from tfq_asr.models import AsrModel, build_model
    from tfq_asr.quant.apply import as_policy, quantize
    from tfq_asr.convert.lowering import file_layout
    from tfq_asr.quant.size import size_report

    src = load_source(args.model, args.random_weights)
    if src.quantization:
        own = as_policy(src.quantization["policy"])
        if args.policy and policy_name != own.name:
            raise UserError(f"--model {args.model} is quantized with {own.name}; --policy {args.policy} disagrees "
                            "(omit --policy, or start from the float model)")
        if method != "none":
            raise UserError(f"--model {args.model} is already quantized: --calibration/--method do not apply")
        kind, policy, policy_name = "checkpoint", own, own.name
    elif kind is None:
        kind, policy_name = "baseline", "fp32"
    if kind == "baseline" and method != "none":
        raise UserError(f"--policy {policy_name} is a LiteRT baseline: --calibration/--method do not apply")
    from tfq_asr.quant import apply
    for flag, wanted, field in (("--int8-convs", args.int8_convs, "conv_activations"),
                                ("--int8-lstm", args.int8_lstm, "lstm_activations")):
        if not wanted:
            continue
        if kind == "baseline":
            raise UserError(f"{flag}: {policy_name} is not a TFQ policy (the LiteRT baselines choose "
                            "their own activations)")
        if field == "lstm_activations" and src.config.kind != "lstm":
            raise UserError(f"{flag}: {src.name} has no LSTM layers (a {src.config.kind} model)")
        if getattr(policy, field) == "dynamic":
            continue
        if kind == "policy":
            policy = policy.with_input_mode(field, "dynamic")
        else:  # a quantized checkpoint: its integer weights stay, only these inputs change
            src = src.with_input_mode(field, "dynamic")
            policy = apply.policy_of(src.keras_model)
        policy_name = policy.name
    if args.streaming and not src.config.streaming:
        raise UserError(f"--streaming: {src.name} is not a streaming configuration (chunk = 0)")
    src, lstm_steps = streaming_window(src, args.chunk_ms, args.left_context_ms, args.streaming)
    shape = (1, args.input_frames, 80)

    def offline_meta(converted):
        return offline_metadata(src.config, src.name, converted, policy_name, args.input_frames)

    from tqdm import tqdm
    # which stage a long conversion is in (Conformer M: a minute and more); on a terminal only
    status = tqdm(total=0, desc="starting", bar_format="converting: {desc} [{elapsed}]", disable=None, leave=False)
    stage = status.set_description_str
    try:
        if kind == "baseline":
            if args.streaming:
                report = export_streaming_baseline(src, args.out, policy_name, lstm_steps=lstm_steps, progress=stage)
            else:
                report = write_baseline(src.keras_model, args.out, policy_name, input_shape=shape,
                                        extra_metadata=offline_meta(src.keras_model), progress=stage)
        else:
            model = src
            if kind == "policy":
                calibration = None
                if method == "zero-shot":
                    calibration = "synthetic"
                elif method == "ptq":
                    from quantize import load_calibration
                    calibration = load_calibration(Path(args.calibration), args.num_calibration, args.cache_dir)
                stage(f"quantizing with {policy_name}")
                model = AsrModel(src.name, src.config, quantize(src.keras_model, policy, calibration, progress=True),
                                 quantization={"policy": policy.to_dict(), "method": method})
            if args.streaming:
                report = export_streaming(model, args.out, lstm_steps=lstm_steps, float_convs=args.float_convs,
                                          progress=stage)
            else:
                report = convert(model.keras_model, args.out, input_shape=shape, extra_metadata=offline_meta,
                                 float_convs=args.float_convs, progress=stage)
    except ValueError as err:  # lowering / quantizer refusals name the layer
        raise UserError(f"{args.model}: {err}") from None
    finally:
        status.close()

    float_model = src.keras_model if kind != "checkpoint" else build_model(src.config)
    layer_names = [getattr(layer, "layer", layer).name for layer in src.keras_model.layers]
    report["policy_kind"] = kind
    file_bytes = args.out.read_bytes()
    rows = layer_rows(report, file_bytes, layer_names)
    table_bytes = sum(r["bytes"] for r in rows)
    accounting = None
    if kind != "baseline" or policy_name == "fp32":
        accounting = size_report(float_model, policy or as_policy("fp32"))
    report.update(model=src.name, policy=policy_name, method=method, random_weights=args.random_weights,
                  speed_only=args.random_weights, streaming=args.streaming,
                  input_frames=None if args.streaming else args.input_frames, rows=rows,
                  size_bytes=args.out.stat().st_size, weight_matrix_bytes=table_bytes,
                  other_bytes=args.out.stat().st_size - table_bytes,
                  accounted_bytes=accounting and accounting["total_bytes"],
                  bits_per_weight=accounting and accounting["bits_per_weight"],
                  size_accounting=accounting, **file_layout(file_bytes))
    print("| layer | bits | bytes | float bytes | storage |\n|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['bits']} | {r['bytes']:,} | {r['float_bytes']:,} | {r['storage']} |")
    print(f"| total weight matrices | | {table_bytes:,} | {sum(r['float_bytes'] for r in rows):,} | |")
    what = "streaming" if args.streaming else f"offline, {args.input_frames} frames"
    acc = (f"; size accounting of {policy_name}: {accounting['total_bytes']:,} bytes "
           f"({accounting['bits_per_weight']:.2f} bits/weight, float {accounting['float_bytes']:,})"
           if accounting else "; LiteRT's formats are outside our size accounting (see the table)")
    print(f"{args.out}: {report['size_bytes']:,} bytes ({policy_name}, {what}); weight matrices {table_bytes:,}, "
          f"everything else (float vectors, graph, metadata, alignment) {report['other_bytes']:,}{acc}"
          + (" [random weights: speed only, transcribes nothing]" if args.random_weights else ""))
    if accounting:  # issue 4's bar: within 2% of the accounting plus the flatbuffer's own bytes
        overhead = report["flatbuffer_bytes"] + report["alignment_bytes"] + report["blob_framing_bytes"]
        print(f"file layout: flatbuffer {report['flatbuffer_bytes']:,} + alignment {report['alignment_bytes']:,} "
              f"+ blob framing {report['blob_framing_bytes']:,} + constant data {report['constant_bytes']:,}; "
              f"file / (size accounting + flatbuffer + alignment + framing) = "
              f"{report['size_bytes'] / (accounting['total_bytes'] + overhead):.3f}")
    slow = [name for name, info in report.get("layers", {}).items() if runs_reference_kernel(info)]
    if slow:  # a legal file, but one a user would not want without knowing
        print(f"warning: {len(slow)} layer(s) ({', '.join(slow[:3])}{', ...' if len(slow) > 3 else ''}) have groups "
              "that are not a multiple of 32: our SIMD kernels do not take them, so these layers run the plain C "
              "reference loops, two to three orders of magnitude slower; groups of 32, 64 or 128 avoid that",
              file=sys.stderr)
    if args.report:
        from tfq_asr.convert.lowering import write_atomically
        write_atomically(args.report, (json.dumps(report, indent=2, default=str) + "\n").encode())


if __name__ == "__main__":
    cli_main(main)
