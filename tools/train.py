#!/usr/bin/env python3
"""Train a Conformer-CTC or LSTM-CTC recognizer on a manifest.

    python tools/train.py --model conformer-xs --train data/corpus/train.tsv --dev data/corpus/dev.tsv \
        --out runs/conformer-xs --export runs/conformer-xs/model --steps 20000

Resumable: run the same command again and it continues from the latest checkpoint in --out.
--strategy mirrored / multiworker uses TensorFlow's own distribution (several GPUs or hosts;
multiworker reads TF_CONFIG).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, check_option_minimums, cli_main  # noqa: E402


def make_strategy(name: str):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --strategy {name!r} (default, mirrored, multiworker)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="configuration name (conformer-xs, lstm-xs, conformer-s, ...)")
    ap.add_argument("--train", type=Path, required=True, help="training manifest (.tsv)")
    ap.add_argument("--dev", type=Path, help="dev manifest for WER during training")
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    ap.add_argument("--export", type=Path, help="model folder to write the best model to (default OUT/model)")
    ap.add_argument("--name", help="model name stored in config.json (default: the export folder name)")
    ap.add_argument("--init", type=Path, help="start from this model folder's weights (fine-tuning), "
                    "e.g. tfq_asr/pretrained/conformer-ctc-xs")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch-frames", type=int, default=6400)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop after this much time and export")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = all cores)")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="feature cache folder")
    ap.add_argument("--strategy", default="default", help="default | mirrored | multiworker")
    ap.add_argument("--freq-warp", type=float, default=0.0, help="mel-axis warp augmentation, e.g. 0.1")
    ap.add_argument("--spectral-tilt", type=float, default=0.0, help="spectral tilt augmentation (log units), e.g. 1.0")
    ap.add_argument("--time-stretch", type=float, default=0.0, help="time stretch augmentation, e.g. 0.1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-overrides", default="{}", help='JSON of config fields, e.g. \'{"num_blocks": 2}\'')
    args = ap.parse_args(argv)
    check_option_minimums(args, steps=1, batch_frames=1, warmup=0, eval_every=1, max_minutes=0, threads=0)
    from tfq_asr.models.bundle import check_model_folder_target, check_not_input
    check_model_folder_target(args.export or args.out / "model")
    if args.init is not None:  # fine-tuning writes a new model; the one it starts from stays
        check_not_input("--export", args.export or args.out / "model", args.init)

    import dataclasses
    import tensorflow as tf
    from tfq_asr.features import load_feature_set
    from tfq_asr.models import get_config
    from tfq_asr.training import TrainConfig, Trainer

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, args.threads))
    tf.random.set_seed(args.seed)
    # the options checked (augmentation ranges, the learning rate) before any file is touched
    cfg = TrainConfig(steps=args.steps, batch_frames=args.batch_frames, peak_lr=args.lr, warmup=args.warmup,
                      eval_every=args.eval_every, max_minutes=args.max_minutes, seed=args.seed,
                      freq_warp=args.freq_warp, spectral_tilt=args.spectral_tilt,
                      time_stretch=args.time_stretch)
    try:
        overrides = json.loads(args.model_overrides)
        model_cfg = dataclasses.replace(get_config(args.model), **overrides)
    except (json.JSONDecodeError, TypeError) as err:
        raise UserError(f"--model-overrides: {err}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "train.log", "a")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
        print(msg, file=log_file, flush=True)

    train = load_feature_set(args.train, args.cache_dir)
    dev = load_feature_set(args.dev, args.cache_dir) if args.dev else None
    export = args.export or args.out / "model"
    trainer = Trainer(model_cfg, train, dev, args.out, cfg, name=args.name or export.name,
                      strategy=make_strategy(args.strategy), log=log)
    result = trainer.fit(export, init_from=args.init)
    log(json.dumps({"done": True, **{k: v for k, v in result.items() if k != "history"}}))
    print(f"best dev WER {result['best_dev_wer']:.2f}% after {result['steps']} steps "
          f"({result['minutes']:.1f} min); model in {export}")


if __name__ == "__main__":
    cli_main(main)
