#!/usr/bin/env python3
"""Streaming speed of .tflite recognizers on the same audio in one run: real-time factor,
per-chunk latency (p50/p95/p99), time to first partial text, model load time, peak RSS and
file size; with several models, ratios against the first.

    python tools/benchmark.py --model fp32.tflite w4.tflite w2.tflite --threads 1
    python tools/benchmark.py --model w2.tflite --audio data/corpus/test.tsv --json
    python tools/benchmark.py --model int8-160.tflite --compare w2-160.tflite --chunk-ms 160
    python tools/benchmark.py --kernels [--quick] [--rounds N] [--json kernels.json]

--kernels: fully connected layers alone (our packed w4/w2 ops against LiteRT float, int8 and
ai-edge-quantizer int4/int2) at the Conformer shapes, M in {1, 4, 16, 64}, and stacks of layers
(the full run adds one whose int8 weights fill twice the L3, so they stream from DRAM), with the
machine's read bandwidth and peak int8 rate, and the int8 MAC rate each memory-bound bar asks
for; see tools/_kernel_bench.py.

Each model is measured in its own subprocess, so load time and peak RSS are its own. Audio is
fed in --feed-ms pieces as a live stream would arrive. The model's chunk is fixed by the file
(`tools/convert.py --streaming --chunk-ms N`); --chunk-ms N refuses, before measuring, any file
written for another chunk, so a comparison meant at N ms runs at N ms. Timings exclude audio decoding and include the frontend, the model and greedy decoding.

The same audio also goes through the C streaming core (build/native/tfq_transcribe: the C
frontend, the model through the LiteRT C API, greedy decoding; what the Android app runs), fed
in the same pieces: the "C core RTF" columns. The Python Recognizer's own work (NumPy frontend,
state arrays, the ctypes calls) is a fixed cost per chunk that every model pays; the C core
shows the models closer to how a device runs them. --no-c-core skips it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.convert.lowering import write_atomically  # noqa: E402
from tfq_asr.errors import UserError, check_option_minimums, check_output_file, cli_main  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "tfq_asr" / "data" / "demo" / "demo.tsv"
C_CORE = Path(__file__).resolve().parent.parent / "build" / "native" / "tfq_transcribe"


def c_core_rtf(model: Path, wavs: list[Path], threads: int, feed_ms: int, repeat: int) -> dict:
    """RTF of the C streaming core over the WAV files (each `repeat` times, one stream per
    file, fed in feed_ms pieces): compute seconds over audio seconds, as tfq_transcribe reports
    them per file."""
    from tfq_asr.runtime.litert import litert_library_path
    cmd = [str(C_CORE), "--litert", str(litert_library_path()), "--threads", str(threads),
           "--chunk-samples", str(max(1, 16 * feed_ms)), str(model), *map(str, wavs * repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        why = [x for x in proc.stderr.splitlines() if x.startswith("tfq_transcribe: ")]
        raise UserError(f"{model}: C core failed: {why[-1] if why else proc.returncode}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    seconds = sum(x["seconds"] for x in lines)
    compute = sum(x["rtf"] * x["seconds"] for x in lines)
    return {"c_rtf": compute / seconds, "c_audio_seconds": seconds}


def write_wavs(audio: list[Path], workdir: Path) -> list[Path]:
    """The clips as 16 kHz float WAV files (tfq_transcribe reads WAV only)."""
    import soundfile as sf
    from tfq_asr.audio import load_audio
    out = []
    for i, p in enumerate(audio):
        w = workdir / f"{i:05d}-{p.stem}.wav"
        sf.write(w, load_audio(p), 16000, subtype="FLOAT")
        out.append(w)
    return out


def audio_paths(spec: Path) -> list[Path]:
    """--audio: a manifest (.tsv), a folder of audio files (and below), or one audio file."""
    if spec.suffix == ".tsv":
        from tfq_asr.manifest import read_manifest
        return [u.path for u in read_manifest(spec)]
    if spec.is_dir():
        from tfq_asr.audio import audio_files
        return audio_files(spec)
    if not spec.is_file():
        raise UserError(f"--audio {spec}: no such file or folder")
    return [spec]


def op_profile(model: Path, clips, threads: int) -> list[dict]:
    """LiteRT's per-op-type profile of streaming the clips once (after a warm-up), with the
    time per model step of each op type."""
    from tfq_asr.streaming import Recognizer
    r = Recognizer(model, threads=threads, profile=True)
    r.transcribe(clips[0][:16000])
    r.model.profile_by_op_type()  # drop the warm-up (first calls repack weights, fill caches)
    steps0 = r.steps
    for a in clips:
        r.transcribe(a)
    rows = r.model.profile_by_op_type()
    steps = max(r.steps - steps0, 1)
    for row in rows:
        row["ms_per_step"] = row["avg_ms"] * row["calls"] / steps
        row["calls_per_step"] = row["calls"] / steps
    r.close()
    return rows


def measure(model: Path, audio: list[Path], threads: int, feed_ms: int, repeat: int, minutes: float,
            profile: bool = False) -> dict:
    """Runs in the child process."""
    import resource
    import time
    import numpy as np
    from tfq_asr.audio import load_audio
    from tfq_asr.streaming import Recognizer
    clips = [load_audio(p) for p in audio]
    if minutes:  # a long stream: the clips repeated back to back
        total = int(minutes * 60 * 16000)
        joined = np.concatenate(clips)
        clips = [np.resize(joined, total)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = Recognizer(model, threads=threads)
    load_s = time.perf_counter() - t0
    r.transcribe(clips[0][:16000])  # warm-up
    feed = max(1, int(16000 * feed_ms / 1000))
    chunk_lat, first_partial, compute, seconds = [], [], 0.0, 0.0
    rss_mid = None
    for _ in range(repeat):
        for a in clips:
            s = r.stream()
            seen_text = False
            start = time.perf_counter()
            for i in range(0, len(a), feed):
                steps = r.steps
                t = time.perf_counter()
                s.accept(a[i:i + feed])
                dt = time.perf_counter() - t
                if r.steps > steps:
                    chunk_lat.append(dt / (r.steps - steps))
                if not seen_text and s.partial():
                    seen_text = True
                    first_partial.append((i + feed) / 16000)
                if minutes and rss_mid is None and i > len(a) // 10:
                    rss_mid = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            s.finish()
            compute += time.perf_counter() - start
            seconds += len(a) / 16000
    lat = np.array(chunk_lat) * 1000
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": str(model), "file_bytes": Path(model).stat().st_size, "policy": r.info.get("policy"),
            "chunk_ms": r.chunk_frames * 10, "threads": threads, "audio_seconds": seconds, "rtf": compute / seconds,
            "chunk_latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                 "p99": float(np.percentile(lat, 99))} if len(lat) else None,
            "first_partial_audio_s": float(np.median(first_partial)) if first_partial else None,
            "load_seconds": load_s, "peak_rss_mb": rss1 / 1024, "rss_before_model_mb": rss0 / 1024,
            **({"rss_after_10pct_mb": (rss_mid or rss1) / 1024} if minutes else {}),
            **({"op_profile": op_profile(model, clips, threads)} if profile else {})}


def check_chunk_ms(models: list[Path], chunk_ms: int) -> None:
    """Refuse (UserError) a model that is not a streaming file of chunk_ms ms chunks."""
    from tfq_asr.runtime.litert import read_tfq_metadata
    if chunk_ms <= 0:
        raise UserError(f"--chunk-ms {chunk_ms}: must be positive")
    for m in models:
        try:
            info = (read_tfq_metadata(m) or {}).get("streaming")
        except Exception as err:  # noqa: BLE001  (any parse failure: not a flatbuffer)
            raise UserError(f"{m}: not a readable .tflite file ({err})") from None
        if not info:
            raise UserError(f"{m}: not a streaming model (no streaming metadata); export one with "
                            f"tools/convert.py --streaming --chunk-ms {chunk_ms}")
        have = int(info["chunk_frames"]) * 10
        if have != chunk_ms:
            raise UserError(f"{m}: written for {have} ms chunks, not the --chunk-ms {chunk_ms} asked for; "
                            f"write it again with tools/convert.py ... --streaming --chunk-ms {chunk_ms}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", type=Path, default=[], help="streaming .tflite files")
    ap.add_argument("--compare", nargs="*", type=Path, default=[], help="more models, ratios against the first")
    ap.add_argument("--audio", type=Path, default=DEMO,
                    help="audio file, folder of audio files or manifest (default: bundled demo)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feed-ms", type=int, default=40, help="audio arrives in pieces of this length")
    ap.add_argument("--chunk-ms", type=int, default=None, metavar="N",
                    help="every model must process N ms chunks (the chunk is fixed when the file is written: "
                         "tools/convert.py --streaming --chunk-ms N); a file written for another is refused")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--long-audio", type=float, default=0.0, metavar="MINUTES",
                    help="stream the audio repeated to this length in one stream (memory stays flat?)")
    ap.add_argument("--profile", action="store_true",
                    help="also print LiteRT's per-op-type profile of each model (time per step)")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                    help="print the results as JSON instead of the tables; with a PATH, write them there and print the tables")
    ap.add_argument("--kernels", action="store_true",
                    help="fully connected layers alone: ours against LiteRT's paths, single thread")
    ap.add_argument("--quick", action="store_true", help="--kernels: a subset of shapes and M, shorter timing")
    ap.add_argument("--shapes", nargs="+", default=None, metavar="KxN",
                    help="--kernels: these layer shapes instead of the Conformer ones (no stacks)")
    ap.add_argument("--m", nargs="+", type=int, default=None, help="--kernels: rows M with --shapes")
    ap.add_argument("--seconds", type=float, default=None, help="--kernels: timing per point")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every model (with --kernels: every variant at each point) this many times, "
                         "interleaved, and keep each one's fastest round (this VM's speed drifts; the minimum "
                         "is the least disturbed)")
    ap.add_argument("--no-c-core", action="store_true",
                    help="skip the C streaming core's RTF (build/native/tfq_transcribe)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.json not in (None, "-"):
        check_output_file("--json", args.json)  # before minutes of measuring
    if args.kernels:
        return kernels(args)
    if not args.model:
        ap.error("--model is required (or --kernels)")
    models = list(args.model) + list(args.compare)
    for m in models:
        if not m.is_file():
            raise UserError(f"--model {m}: no such file")
    check_option_minimums(args, rounds=1, threads=1, feed_ms=1, repeat=1, long_audio=0)
    if args.chunk_ms is not None:
        check_chunk_ms(models, args.chunk_ms)
    audio = audio_paths(args.audio)
    if args.child:
        print(json.dumps(measure(models[0], audio, args.threads, args.feed_ms, args.repeat, args.long_audio,
                                 args.profile)))
        return
    use_c = not args.no_c_core and not args.long_audio and C_CORE.is_file()
    if not args.no_c_core and not C_CORE.is_file():
        print(f"note: {C_CORE} not built (make native): no C core column", file=sys.stderr)
    tmp = tempfile.TemporaryDirectory(prefix="tfq-bench-")
    wavs = write_wavs(audio, Path(tmp.name)) if use_c else []
    rounds: list[list[dict]] = [[] for _ in models]
    for round_index in range(args.rounds):  # all models once per round: slow spells hit them alike
        for i, m in enumerate(models):
            cmd = [sys.executable, __file__, "--child", "--model", str(m), "--audio", str(args.audio),
                   "--threads", str(args.threads), "--feed-ms", str(args.feed_ms), "--repeat", str(args.repeat),
                   "--long-audio", str(args.long_audio)] + (["--profile"] if args.profile and round_index == 0 else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("error:")] or proc.stderr.strip().splitlines()[-1:]
                why = lines[-1].removeprefix("error:").strip() if lines else f"exit status {proc.returncode}"
                # the child's own error names the file already (a file that is not a streaming model)
                raise UserError(why if why.startswith(f"{m}:") else f"{m}: benchmark failed: {why}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if use_c:
                r.update(c_core_rtf(m, wavs, args.threads, args.feed_ms, args.repeat))
            rounds[i].append(r)
    tmp.cleanup()
    results = []
    for runs in rounds:  # the fastest round of each model (interference only ever slows a run)
        best = dict(min(runs, key=lambda r: r["rtf"]))
        if "op_profile" in runs[0]:  # profiled in the first round only
            best["op_profile"] = runs[0]["op_profile"]
        if use_c:
            best["c_rtf"] = min(r["c_rtf"] for r in runs)
        best["rounds"] = len(runs)
        results.append(best)
    base = results[0]["rtf"]
    for r in results:
        r["rtf_ratio"] = r["rtf"] / base
        if use_c:
            r["c_rtf_ratio"] = r["c_rtf"] / results[0]["c_rtf"]
    if args.json == "-":
        print(json.dumps(results, indent=2))
        return
    if args.json:
        write_atomically(Path(args.json), json.dumps(results, indent=2).encode())
    print(f"{sum(r['audio_seconds'] for r in results[:1]):.1f} s of audio, {args.threads} thread(s), "
          f"fed in {args.feed_ms} ms pieces" + (f", fastest of {args.rounds} interleaved rounds" if args.rounds > 1 else ""))
    c_head, c_rule = (" C core RTF | vs first |", "---:|---:|") if use_c else ("", "")
    print(f"| model | policy | bytes | chunk ms | RTF | vs first | chunk p50/p95/p99 ms | first partial s | load s | peak RSS MB |{c_head}")
    print(f"|---|---|---:|---:|---:|---:|---|---:|---:|---:|{c_rule}")
    for r in results:
        lat = r["chunk_latency_ms"] or {}
        c_cols = f" {r['c_rtf']:.4f} | {r['c_rtf_ratio']:.2f} |" if use_c else ""
        print(f"| {Path(r['model']).name} | {r['policy']} | {r['file_bytes']:,} | {r['chunk_ms']} | {r['rtf']:.4f} | "
              f"{r['rtf_ratio']:.2f} | {lat.get('p50', 0):.2f} / {lat.get('p95', 0):.2f} / {lat.get('p99', 0):.2f} | "
              f"{r['first_partial_audio_s'] or 0:.2f} | {r['load_seconds']:.2f} | {r['peak_rss_mb']:.0f} |{c_cols}")
    for r in results:
        if "op_profile" not in r:
            continue
        print(f"\nper-op profile of {Path(r['model']).name} (LiteRT profiler, one pass over the audio)")
        print("| op type | ops in graph | calls per step | us per call | ms per step | share |")
        print("|---|---:|---:|---:|---:|---:|")
        for p in r["op_profile"][:8]:
            print(f"| {p['op']} | {p['count']} | {p['calls_per_step']:.0f} | {1000 * p['avg_ms']:.1f} | "
                  f"{p['ms_per_step']:.3f} | {p['percent']:.1f}% |")


def kernels(args) -> None:
    import _kernel_bench as kb
    if args.m is not None and any(m < 1 for m in args.m):
        raise UserError(f"--m {args.m}: rows must be positive")
    check_option_minimums(args, rounds=1)
    if args.seconds is not None and not args.seconds > 0:
        raise UserError(f"--seconds {args.seconds}: must be positive")
    try:
        configs = (kb.custom_configs(args.shapes, args.m or [1, 16]) if args.shapes
                   else kb.default_configs(args.quick))
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.m is not None and not args.shapes:
        for c in configs:
            c["m"] = [m for m in args.m if not c["stack"] or m <= kb.MEMORY_BOUND_M]
        configs = [c for c in configs if c["m"]]
    res = kb.run(configs, args.quick, seconds=args.seconds, rounds=args.rounds)
    if args.json == "-":
        print(json.dumps(res, indent=2))
        return
    if args.json:
        write_atomically(Path(args.json), json.dumps(res, indent=2).encode())
    kb.print_report(res)


if __name__ == "__main__":
    cli_main(main)
