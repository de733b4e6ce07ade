#!/usr/bin/env python3
"""Transcribe audio files with a bundled model (by name), a model folder or a .tflite.

    python tools/transcribe.py --model conformer-ctc-xs speech.flac
    python tools/transcribe.py --model conformer-ctc-xs --json a.wav b.flac
    python tools/transcribe.py --model w2-stream.tflite --beam 8 speech.flac
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import cli_main  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundled model name, model folder, or .tflite (streaming or offline)")
    ap.add_argument("--json", action="store_true", help='one JSON object per line: {"audio": ..., "text": ...}')
    ap.add_argument("--beam", type=int, default=0, help="CTC prefix beam width (0 = greedy)")
    ap.add_argument("audio", nargs="+", type=Path)
    args = ap.parse_args(argv)
    from tfq_asr.audio import load_audio
    from tfq_asr.decode import check_beam_width
    from tfq_asr.streaming import load_any
    check_beam_width(args.beam)
    # Check every file before loading the model, so a typo fails fast.
    audios = [load_audio(p) for p in args.audio]
    model = load_any(args.model)
    for path, audio in zip(args.audio, audios):
        text = model.transcribe(audio, beam_width=args.beam)
        print(json.dumps({"audio": str(path), "text": text}) if args.json else f"{path}\t{text}", flush=True)


if __name__ == "__main__":
    cli_main(main)
