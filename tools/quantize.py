#!/usr/bin/env python3
"""Quantize a recognizer and write a quantized checkpoint (a model folder that loads as the
quantized Keras model everywhere a model is accepted).

    python tools/quantize.py --model conformer-ctc-xs --policy w4 --method ptq \
        --calibration data/corpus/dev.tsv --out runs/q/conformer-w4-ptq
    python tools/quantize.py --model conformer-ctc-xs --policy w8 --method zero-shot --out runs/q/w8-zs
    python tools/quantize.py --model conformer-ctc-xs --policy w2-sc64-f16 --method qat \
        --train data/corpus/train.tsv --steps 2000 --out runs/q/conformer-w2-qat

Methods: ptq (calibrate on --calibration utterances), zero-shot (calibrate on synthetic inputs
matching the model's stored normalisation statistics: no data), qat (PTQ on --num-calibration
training utterances, then fine-tuning with the quantized forward pass), none (weights only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, check_option_minimums, cli_main  # noqa: E402

METHODS = ("ptq", "qat", "zero-shot", "none")


def load_calibration(source: Path, count: int, cache_dir: Path):
    """Log-mel features of up to `count` utterances spread over `source`: a manifest (features
    cached in cache_dir) or a folder of audio files (calibration needs no transcripts)."""
    if count < 1:
        raise UserError(f"--num-calibration {count}: must be at least 1")
    source = Path(source)
    if source.is_dir():
        from tqdm import tqdm
        from tfq_asr.audio import audio_files, load_audio
        from tfq_asr.frontend import log_mel
        files = audio_files(source)
        picked = files[::max(1, len(files) // count)][:count]
        return [log_mel(load_audio(p)) for p in tqdm(picked, desc=f"calibration audio {source.name}")]
    from tfq_asr.features import load_feature_set
    data = load_feature_set(source, cache_dir)
    if len(data) == 0:
        raise UserError(f"{source}: calibration manifest has no utterances")
    step = max(1, len(data) // count)
    return [data.features(i) for i in range(0, len(data), step)][:count]


def qat_augment(text: str) -> dict:
    """--augment: a JSON object of TrainConfig's augmentation fields, checked before any work."""
    from tfq_asr.training import TrainConfig
    try:
        augment = json.loads(text)
        if not isinstance(augment, dict):
            raise TypeError(f"expected a JSON object of TrainConfig fields, got {type(augment).__name__}")
        TrainConfig(**augment)
    except (json.JSONDecodeError, TypeError, UserError) as err:
        raise UserError(f"--augment {text}: {err}") from None
    return augment


def search_policy(src, arg: str, args):
    """--policy auto:BYTES[:BASE]: mixed precision within a size budget from measured sensitivity."""
    from tfq_asr.quant.mixed import describe, search
    parts = arg.split(":")
    try:
        budget = int(float(parts[1]))
    except (IndexError, ValueError):
        raise UserError(f"--policy {arg}: expected auto:BYTES or auto:BYTES:BASE, e.g. auto:800000:w4-sc64-f16") from None
    base = parts[2] if len(parts) > 2 else "w4-sc64-f16"
    from tfq_asr.quant.apply import as_policy
    as_policy(base)  # an unknown base is refused by name, before any data is read
    source = args.calibration or args.train
    if not source:
        raise UserError("--policy auto:... measures sensitivity on data: pass --calibration or --train")
    inputs = load_calibration(source, min(args.num_calibration, 8), args.cache_dir)
    policy, choices = search(src.keras_model, budget, inputs, base=base, progress=True)
    print(describe(choices), file=sys.stderr)
    return policy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundled model name or model folder (float)")
    ap.add_argument("--policy", required=True, help="policy preset, e.g. w8, w4, w2-sc64-f16, w4-mixed; a JSON "
                    "file; or auto:BYTES[:BASE] for a mixed-precision search within a size budget")
    ap.add_argument("--method", default="ptq", choices=METHODS)
    ap.add_argument("--out", type=Path, required=True, help="quantized checkpoint folder to write")
    ap.add_argument("--calibration", type=Path, help="manifest or folder of audio files of calibration utterances (ptq)")
    ap.add_argument("--num-calibration", type=int, default=32, help="calibration utterances")
    ap.add_argument("--train", type=Path, help="training manifest (qat)")
    ap.add_argument("--dev", type=Path, help="dev manifest: QAT reports its loss on it")
    ap.add_argument("--steps", type=int, default=1000, help="QAT steps")
    ap.add_argument("--lr", type=float, default=2e-4, help="QAT peak learning rate")
    ap.add_argument("--batch-frames", type=int, default=6400)
    ap.add_argument("--augment", default='{"freq_warp": 0.1, "spectral_tilt": 1.0, "time_stretch": 0.08}',
                    help="QAT augmentation (TrainConfig fields as JSON)")
    ap.add_argument("--test", type=Path, help="evaluate the quantized model on this manifest and store the result")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = all cores)")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    check_option_minimums(args, num_calibration=1, steps=1, batch_frames=1, threads=0)
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr}: must be positive")
    augment = qat_augment(args.augment) if args.method == "qat" else None
    from tfq_asr.models.bundle import check_model_folder_target, check_not_input
    check_model_folder_target(args.out)  # before minutes of work, not at the save
    check_not_input("--out", args.out, args.model)

    import tensorflow as tf
    from tfq_asr.models import AsrModel, load_pretrained, output_length, save_model
    from tfq_asr.quant.apply import as_policy, quantize
    from tfq_asr.quant.size import format_bytes, size_report

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    policy_arg = args.policy
    if policy_arg.endswith(".json"):
        try:
            policy_arg = json.loads(Path(policy_arg).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"--policy {args.policy}: {err}") from None
    src = load_pretrained(args.model)
    if src.quantization:
        raise UserError(f"--model {args.model} is already quantized ({src.quantization['policy']['name']}); "
                        "quantize its float model instead")
    if isinstance(policy_arg, str) and policy_arg.startswith("auto:"):
        policy = search_policy(src, policy_arg, args)
    else:
        policy = as_policy(policy_arg)
    print(policy.describe(), file=sys.stderr)

    calibration = None
    if args.method == "ptq":
        if not args.calibration:
            raise UserError("--method ptq needs --calibration MANIFEST|DIR (or use --method zero-shot)")
        calibration = load_calibration(args.calibration, args.num_calibration, args.cache_dir)
    elif args.method == "zero-shot":
        calibration = "synthetic"
    elif args.method == "qat":
        if not args.train:
            raise UserError("--method qat needs --train MANIFEST")
        calibration = load_calibration(args.train, args.num_calibration, args.cache_dir)
    q = quantize(src.keras_model, policy, calibration, progress=True)
    info = {"policy": policy.to_dict(), "method": args.method, "source": src.name,
            "calibration_utterances": None if calibration is None else
            (len(calibration) if not isinstance(calibration, str) else "synthetic")}
    if args.method == "qat":
        from tfq_asr.features import load_feature_set
        from tfq_asr.quant.qat import qat_finetune
        train = load_feature_set(args.train, args.cache_dir)
        hist = qat_finetune(q, lambda n: output_length(n, src.config), train, args.steps, lr=args.lr,
                            batch_frames=args.batch_frames, seed=args.seed, augment=augment, verbose=2)
        info.update(qat_steps=args.steps, qat_lr=args.lr, qat_final_loss=float(hist.history["loss"][-1]))
    model = AsrModel(f"{src.name}-{policy.name}-{args.method}", src.config, q, quantization=info)
    # Latent float weights stored as float16 like the bundles; reload so every figure below is
    # measured on exactly what the folder holds.
    save_model(model, args.out, dtype="float16")
    model = load_pretrained(args.out)
    report = size_report(src.keras_model, policy)
    print(f"{policy.name}: {format_bytes(report['total_bytes'])} ({report['bits_per_weight']:.2f} bits/weight) "
          f"vs float {format_bytes(report['float_bytes'])}")
    if args.test:
        from tfq_asr.eval.evaluate import evaluate_manifest, format_table
        result = evaluate_manifest(model, args.test)
        print(format_table(result))
        info["test"] = {"manifest": str(args.test), **result["overall"], "subsets": result["subsets"]}
        model.quantization = info
        save_model(model, args.out, dtype="float16")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli_main(main)
