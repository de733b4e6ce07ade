#!/usr/bin/env python3
"""Write the Android demo app's assets (android_demo/app/src/main/assets/, not committed):

    conformer-ctc-xs-w2-stream.tflite   the bundled 2-bit conformer-ctc-xs as a streaming model
    bench.wav                           a demo utterance as 16 kHz mono 16-bit PCM (the benchmark)
    bench.txt                           its reference text (tfq_asr/data/demo/demo.tsv)

    TF_USE_LEGACY_KERAS=1 .venv/bin/python tools/android_assets.py
    ... --model-file build/stream_core/conformer-ctc-xs-w2-stream-*.tflite   # skip the conversion

Converting the model takes about a minute (tools/convert.py --model conformer-ctc-xs-w2
--streaming); --model-file copies an already converted streaming file instead (checked to be
one).  Every file is written to a temporary name in the same folder, then renamed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, cli_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "android_demo" / "app" / "src" / "main" / "assets"
DEMO = ROOT / "tfq_asr" / "data" / "demo"
MODEL = "conformer-ctc-xs-w2"
# The names MainActivity and app/build.gradle's checkTfqAssets expect.
MODEL_ASSET = "conformer-ctc-xs-w2-stream.tflite"
WAV_ASSET = "bench.wav"
TEXT_ASSET = "bench.txt"
SAMPLE_RATE = 16000


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def streaming_info(path: Path) -> dict:
    """The streaming metadata of a converted file; UserError if it is not a streaming model."""
    from tfq_asr.runtime.litert import read_tfq_metadata
    try:
        info = read_tfq_metadata(path) or {}
    except Exception as err:  # a flatbuffer that does not parse
        raise UserError(f"{path}: not a readable .tflite ({err})") from None
    s = info.get("streaming")
    if isinstance(s, str):
        s = json.loads(s)
    if not isinstance(s, dict):
        raise UserError(f"{path}: not a streaming model (no streaming metadata); convert with "
                        f"tools/convert.py --model {MODEL} --streaming")
    return s


def write_model(out: Path, model_file: Path | None) -> dict:
    dst = out / MODEL_ASSET
    tmp = _tmp(dst)
    try:
        if model_file is not None:
            if not model_file.is_file():
                raise UserError(f"--model-file {model_file}: no such file")
            streaming_info(model_file)
            tmp.write_bytes(model_file.read_bytes())
        else:
            cmd = [sys.executable, str(ROOT / "tools" / "convert.py"), "--model", MODEL,
                   "--streaming", "--out", str(tmp)]
            print(f"converting {MODEL} (streaming), about a minute: {' '.join(cmd[1:])}", flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True,
                                 env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
            if res.returncode != 0 or not tmp.is_file():
                raise UserError(f"tools/convert.py --model {MODEL} --streaming failed "
                                f"(exit {res.returncode}): {res.stderr.strip()[-2000:]}")
        info = streaming_info(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def reference_text(name: str) -> str:
    with open(DEMO / "demo.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["path"] == name:
                return row["text"]
    raise UserError(f"{name}: not listed in {DEMO / 'demo.tsv'}")


def write_utterance(out: Path, name: str) -> tuple[int, float]:
    """The demo FLAC as 16-bit mono PCM WAV (the same samples) and its reference text."""
    import soundfile as sf
    src = DEMO / name
    if not src.is_file():
        choices = ", ".join(sorted(p.name for p in DEMO.glob("*.flac")))
        raise UserError(f"--utterance {name}: not in {DEMO} (one of: {choices})")
    data, sr = sf.read(str(src), dtype="int16", always_2d=True)
    if sr != SAMPLE_RATE or data.shape[1] != 1:
        raise UserError(f"{src}: {sr} Hz, {data.shape[1]} channels; 16 kHz mono expected")
    text = reference_text(name)
    for asset, write in ((WAV_ASSET, lambda p: sf.write(str(p), data[:, 0], sr, subtype="PCM_16",
                                                       format="WAV")),
                         (TEXT_ASSET, lambda p: p.write_text(text + "\n", encoding="utf-8"))):
        dst = out / asset
        tmp = _tmp(dst)
        try:
            write(tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return len(data), len(data) / sr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"assets folder (default: {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--model-file", type=Path,
                    help=f"an already converted streaming {MODEL} .tflite to copy instead of converting")
    ap.add_argument("--utterance", default="test-000017.flac",
                    help=f"demo file of {DEMO.relative_to(ROOT)} for the benchmark (default: %(default)s)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    samples, seconds = write_utterance(args.out, args.utterance)
    info = write_model(args.out, args.model_file)
    size = (args.out / MODEL_ASSET).stat().st_size
    print(f"{args.out / MODEL_ASSET}: {size:,} bytes ({size / 1e6:.2f} MB), model "
          f"{info.get('model', '?')}, policy {info.get('policy', '?')}, "
          f"{info.get('chunk_frames', '?')} frames per step")
    print(f"{args.out / WAV_ASSET}: {args.utterance}, {samples} samples ({seconds:.2f} s)")
    print(f"{args.out / TEXT_ASSET}: {reference_text(args.utterance)}")
    return 0


if __name__ == "__main__":
    cli_main(main)
