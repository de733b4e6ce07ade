"""Score a model on a manifest: transcripts, WER/CER per subset, real-time factor."""
from __future__ import annotations

import time
from collections import defaultdict

from ..audio import load_audio
from ..frontend import log_mel
from ..manifest import read_manifest
from .metrics import error_rates


def evaluate_manifest(model, manifest, beam_width: int = 0, limit: int | None = None, group_by: str = "engine",
                      progress: bool = True) -> dict:
    """`model`: an AsrModel, anything load_pretrained accepts, a .tflite path (streaming or
    offline), or any recognizer-like object with `transcribe(samples)` for 16 kHz mono float
    samples (e.g. `tfq_asr.streaming.Recognizer`; its beam width is fixed when it is built, so
    `beam_width` must then be 0) and optionally a `name`. Returns per-subset and overall
    WER/CER (percent), the real-time factor (features + network + decoding over audio
    duration, measured the same way for every kind of model) and every transcript."""
    import inspect
    from pathlib import Path
    from tqdm import tqdm
    from ..decode import check_beam_width
    from ..errors import UserError
    from ..streaming import load_any
    beam_width = check_beam_width(beam_width)
    if isinstance(model, (str, Path)):
        model = load_any(model)
    utts = read_manifest(manifest, limit)
    audios = [load_audio(u.path) for u in utts]  # read all first: a bad file fails before any work
    rows = []
    compute = 0.0
    if callable(getattr(model, "transcribe_features", None)):  # an AsrModel
        transcribe = lambda a: model.transcribe_features(log_mel(a), beam_width)  # noqa: E731
    elif callable(getattr(model, "transcribe", None)):
        if "beam_width" in inspect.signature(model.transcribe).parameters:
            transcribe = lambda a: model.transcribe(a, beam_width=beam_width)  # noqa: E731
        elif beam_width:
            raise UserError(f"{type(model).__name__}.transcribe takes no beam width: build it with one "
                            "(e.g. Recognizer(path, beam_width=N)) and pass beam_width=0")
        else:
            transcribe = model.transcribe
    else:
        raise UserError(f"cannot evaluate a {type(model).__name__}: expected a model name or folder, a .tflite "
                        "path, or an object with transcribe(samples)")
    name = getattr(model, "name", None) or Path(str(getattr(model, "path", type(model).__name__))).name
    if audios:  # build the inference graph (or compile the file) outside the timed loop
        transcribe(audios[0][:16000])
    for u, audio in tqdm(list(zip(utts, audios)), desc=f"evaluating {name}", disable=not progress):
        t0 = time.perf_counter()
        hyp = transcribe(audio)
        compute += time.perf_counter() - t0
        rows.append({"audio": str(u.path), "subset": getattr(u, group_by) or "-", "ref": u.text, "hyp": hyp,
                     "seconds": len(audio) / 16000})
    groups = defaultdict(list)
    for r in rows:
        groups[r["subset"]].append(r)
    subsets = {name: error_rates([r["ref"] for r in rs], [r["hyp"] for r in rs]) for name, rs in sorted(groups.items())}
    audio_s = sum(r["seconds"] for r in rows)
    return {"model": name, "manifest": str(manifest), "beam_width": beam_width,
            "overall": error_rates([r["ref"] for r in rows], [r["hyp"] for r in rows]),
            "subsets": subsets, "audio_seconds": audio_s, "rtf": compute / max(audio_s, 1e-9),
            "utterances": rows}


def format_table(result: dict) -> str:
    lines = [f"model {result['model']} on {result['manifest']}",
             "| subset | utterances | words | WER % | CER % |", "|---|---:|---:|---:|---:|"]
    for name, r in [*result["subsets"].items(), ("all", result["overall"])]:
        lines.append(f"| {name} | {r['utterances']} | {r['words']} | {r['wer']:.2f} | {r['cer']:.2f} |")
    lines.append(f"real-time factor {result['rtf']:.4f} over {result['audio_seconds']:.1f} s of audio")
    return "\n".join(lines)
