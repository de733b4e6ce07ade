#!/usr/bin/env python3
"""`make demo`: the bundled Conformer, float and quantized, lowered to streaming .tflite files
(packed int4/int2 custom ops for the quantized bundles) and run through LiteRT on one thread
over the bundled held-out utterances: transcripts, then a table of file size, WER, CER and
real-time factor (through the Python runner and the C streaming core, each the fastest of
PASSES passes: a single pass moved by up to half on this VM). The .tflite files are
cached in build/demo/ (rebuilt when a bundle or the lowering code changes)."""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import check_option_minimums, cli_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO_MANIFEST = ROOT / "tfq_asr" / "data" / "demo" / "demo.tsv"
CACHE = ROOT / "build" / "demo"
PASSES = 3  # passes over the audio per RTF figure, the fastest kept (about a second each)
# (label, bundled model, variant): the float bundle lowered as is ("tfq") or by LiteRT's own
# quantizer ("litert-int8"), and our quantized bundles with their convolution inputs in int8
# ("convq8", what `tools/convert.py --int8-convs` does): their float-input convolutions cost
# w2 about a third more time than litert-int8 in the C core; int8 inputs keep the WER within a
# word or two (BENCHMARKS.md).
ROWS = (("fp32", "conformer-ctc-xs", "tfq"),
        ("litert-int8", "conformer-ctc-xs", "litert-int8"),
        ("w4 (QAT), int8 convs", "conformer-ctc-xs-w4", "convq8"),
        ("w2 (QAT), int8 convs", "conformer-ctc-xs-w2", "convq8"))
CODE = ("tfq_asr/convert/export.py", "tfq_asr/convert/lowering.py", "tfq_asr/convert/packing.py",
        "tfq_asr/convert/op_blob.py", "tfq_asr/models/streaming.py", "tfq_asr/convert/baselines.py",
        "tfq_asr/convert/im2col.py", "tfq_asr/quant/apply.py", "tfq_asr/quant/configs.py")


def _digest(model_dir: Path, variant: str) -> str:
    h = hashlib.sha256(variant.encode())
    for p in sorted(model_dir.iterdir()) + [ROOT / c for c in CODE]:
        if p.is_file() and p.suffix in (".npz", ".json", ".py"):
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def streaming_file(name: str, variant: str) -> Path:
    """The cached streaming file of bundle `name` as `variant` (see ROWS)."""
    from tfq_asr.models import PRETRAINED_DIR, load_pretrained
    from tfq_asr.convert.export import export_streaming
    path = CACHE / f"{name}-{variant}-{_digest(PRETRAINED_DIR / name, variant)}.tflite"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for old in CACHE.glob(f"{name}-{variant}-*.tflite"):
            old.unlink()
        print(f"lowering {name} ({variant}) to {path.relative_to(ROOT)} ...", flush=True)
        model = load_pretrained(name)
        if variant == "litert-int8":
            from tfq_asr.convert.baselines import export_streaming_baseline
            export_streaming_baseline(model, path, variant)
            return path
        if variant == "convq8":
            model = model.with_input_mode("conv_activations", "dynamic")
        export_streaming(model, path)
    return path


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, default=DEMO_MANIFEST)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    check_option_minimums(args, threads=1)
    from tfq_asr.audio import load_audio
    from tfq_asr.eval.metrics import error_rates
    from tfq_asr.manifest import read_manifest
    from tfq_asr.models import list_pretrained
    from tfq_asr.streaming import Recognizer

    from benchmark import C_CORE, c_core_rtf, write_wavs
    utts = read_manifest(args.manifest)
    audio = [load_audio(u.path) for u in utts]
    seconds = sum(len(a) for a in audio) / 16000
    available = set(list_pretrained())
    table = []
    tmp = tempfile.TemporaryDirectory(prefix="tfq-demo-")
    # the same audio through the C streaming core (what the Android app runs), if it is built
    wavs = write_wavs([Path(u.path) for u in utts], Path(tmp.name)) if C_CORE.is_file() else []
    for label, name, variant in ROWS:
        if name not in available:
            print(f"({name} is not bundled; skipping {label})")
            continue
        path = streaming_file(name, variant)
        r = Recognizer(path, threads=args.threads)
        r.transcribe(audio[0][:16000])  # warm-up: first-run allocation is not streaming cost
        compute = float("inf")
        for _ in range(PASSES):
            hyps, elapsed = [], 0.0
            for a in audio:
                t0 = time.perf_counter()
                hyps.append(r.transcribe(a))
                elapsed += time.perf_counter() - t0
            compute = min(compute, elapsed)
        r.close()
        if not table:
            for u, h in zip(utts, hyps):
                print(f"{Path(u.path).name}  [{u.engine}]\n  ref: {u.text}\n  hyp: {h}")
        rates = error_rates([u.text for u in utts], hyps)
        c_rtf = min(c_core_rtf(path, wavs, args.threads, 40, 1)["c_rtf"] for _ in range(PASSES)) if wavs else None
        table.append((label, name, path.stat().st_size, rates, compute / seconds, c_rtf))
    tmp.cleanup()
    print()
    print(f"conformer-ctc-xs, streaming .tflite through LiteRT, {args.threads} thread(s), "
          f"{len(utts)} held-out utterances ({seconds:.1f} s), greedy decoding; RTF: fastest of {PASSES} passes")
    print("| policy | bundle | file bytes | WER % | CER % | RTF | RTF (C core) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, name, size, rates, rtf, c_rtf in table:
        c_text = f"{c_rtf:.4f}" if c_rtf is not None else "not built"
        print(f"| {label} | {name} | {size:,} | {rates['wer']:.2f} | {rates['cer']:.2f} | {rtf:.4f} | {c_text} |")


if __name__ == "__main__":
    cli_main(main)
