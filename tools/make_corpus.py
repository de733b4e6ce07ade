#!/usr/bin/env python3
"""Build a synthetic speech corpus with espeak-ng, flite and festival.

Text comes from Debian's fortune files (or any text files given with --text), split into
sentences and normalised to the model vocabulary (numbers spelled out). Each utterance is one
sentence spoken by one voice at a random rate and pitch, resampled to 16 kHz, with light gain,
speed and noise augmentation, and written as FLAC. Output:

    OUT/audio/<split>/<id>.flac
    OUT/<split>.tsv      columns: path (relative to OUT), duration, voice, engine, text

The test split uses held-out voices AND held-out sentences; dev uses training voices on
held-out sentences. The same seed and counts give the same corpus; --only renders some
splits of it (a model card's test set without its training utterances):

    python tools/make_corpus.py --out data/corpus --train 30000 --dev 400 --test 400
    python tools/make_corpus.py --out data/corpus --train 24000 --dev 300 --test 400 --only dev test
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import _setup  # noqa: F401,E402  (environment and sys.path)
from tfq_asr.audio import SAMPLE_RATE, resample  # noqa: E402
from tfq_asr.errors import UserError, check_option_minimums, cli_main  # noqa: E402
from tfq_asr.manifest import MANIFEST_COLUMNS, write_manifest  # noqa: E402
from tfq_asr.text import normalize  # noqa: E402

FORTUNE_DIR = Path("/usr/share/games/fortunes")
FORTUNE_SKIP = {"art", "ascii-art", "translate-me", "perl", "linux", "linuxcookie", "debian", "zippy"}

ESPEAK_ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                  "en-us-nyc", "en-029"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "adam", "belinda", "benjamin",
                   "david", "edward", "linda", "max", "michel", "norbert", "paul", "pedro", "steph",
                   "travis", "victor", "john", "robert", "quincy", "Denis", "Gene", "Mike"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]

# Voices never heard in training: a whole accent, a few espeak variants, one flite and one
# festival voice.
HELD_OUT_ACCENTS = {"en-029"}
HELD_OUT_VARIANTS = {"f4", "m6", "Annie", "norbert"}
HELD_OUT_OTHER = {"flite:rms", "festival:ked_diphone"}


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"

    def held_out(self) -> bool:
        if self.engine == "espeak":
            accent, _, variant = self.name.partition("+")
            return accent in HELD_OUT_ACCENTS or variant in HELD_OUT_VARIANTS
        return self.key in HELD_OUT_OTHER


def all_voices() -> list[Voice]:
    voices = [Voice("espeak", a + ("+" + v if v else "")) for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    voices += [Voice("flite", v) for v in FLITE_VOICES]
    voices += [Voice("festival", v) for v in FESTIVAL_VOICES]
    return voices


def read_sentences(paths: list[Path], min_words: int = 3, max_words: int = 24) -> list[str]:
    """Sentences from fortune-style files ('%' separated), normalised, deduplicated, sorted."""
    out = set()
    for path in paths:
        raw = path.read_text(encoding="utf-8", errors="ignore")
        for entry in re.split(r"^%\s*$", raw, flags=re.M):
            lines = [ln for ln in entry.splitlines() if not re.match(r"^\s*(--|- |~~)", ln)]
            body = " ".join(ln.strip() for ln in lines)
            if re.search(r"[|<>{}\\_#^]|\s{3,}", body):  # tables, code, ascii art
                continue
            for sent in re.split(r"(?<=[.!?;:])\s+", body):
                if re.search(r"\b[A-Z]{2,}\b", sent):  # acronyms: TTS spells them, text does not
                    continue
                norm = normalize(sent)
                n = len(norm.split())
                if min_words <= n <= max_words and len(norm) <= 160:
                    out.add(norm)
    return sorted(out)


def default_text_files() -> list[Path]:
    if not FORTUNE_DIR.is_dir():
        raise UserError(f"no text source: {FORTUNE_DIR} is missing (apt-get install fortunes) and --text not given")
    return sorted(p for p in FORTUNE_DIR.iterdir()
                  if p.is_file() and "." not in p.name and p.name not in FORTUNE_SKIP)


def _stable_fraction(text: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def split_sentences(sentences: list[str], seed: int, dev_frac: float, test_frac: float):
    splits = {"train": [], "dev": [], "test": []}
    for s in sentences:
        u = _stable_fraction(s, seed)
        splits["test" if u < test_frac else "dev" if u < test_frac + dev_frac else "train"].append(s)
    return splits


@dataclass(frozen=True)
class Job:
    uid: str
    split: str
    text: str
    voice: Voice
    rate: float      # speaking-rate factor (1 = engine default)
    pitch: float     # espeak pitch 0..99 or f0 factor for flite
    speed: float     # resampling speed perturbation
    gain_db: float
    snr_db: float    # inf = no noise
    seed: int


def _synth_raw(job: Job, tmp: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf
    wav = tmp / f"{job.uid}.wav"
    v = job.voice
    if v.engine == "espeak":
        cmd = ["espeak-ng", "-v", v.name, "-s", str(int(175 * job.rate)), "-p", str(int(job.pitch)),
               "-w", str(wav), job.text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    elif v.engine == "flite":
        cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={1 / job.rate:.3f}",
               "--setf", f"int_f0_target_mean={int(110 * job.pitch)}", "-t", job.text, "-o", str(wav)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    elif v.engine == "festival":
        script = (f"(voice_{v.name})\n(Parameter.set 'Duration_Stretch {1 / job.rate:.3f})\n"
                  f"(utt.save.wave (SynthText \"{job.text}\") \"{wav}\" 'riff)\n")
        subprocess.run(["festival", "--pipe"], input=script.encode(), check=True, capture_output=True, timeout=120)
    else:
        raise ValueError(f"unknown engine {v.engine}")
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    wav.unlink()
    return audio.mean(axis=1), sr


def render(job: Job, out_dir: Path) -> tuple[str, float] | None:
    """Synthesize and augment one utterance; returns (relative path, duration) or None if silent."""
    import soundfile as sf
    rng = np.random.default_rng(job.seed)
    with tempfile.TemporaryDirectory() as tmp:
        audio, sr = _synth_raw(job, Path(tmp))
    # Speed perturbation: resample as if recorded at sr*speed (changes tempo and pitch together).
    audio = resample(audio, int(round(sr * job.speed)), SAMPLE_RATE)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-4 or audio.size < SAMPLE_RATE // 4:
        return None
    # Trim long synthetic silences but keep a little padding, then random leading/trailing room.
    audio = audio / peak * 10 ** (job.gain_db / 20)
    pad = [int(rng.integers(0, SAMPLE_RATE // 5)) for _ in range(2)]
    audio = np.concatenate([np.zeros(pad[0], np.float32), audio, np.zeros(pad[1], np.float32)])
    if np.isfinite(job.snr_db):
        power = float(np.mean(audio ** 2))
        audio = audio + rng.normal(0, np.sqrt(power / 10 ** (job.snr_db / 10)), audio.shape)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    rel = Path("audio") / job.split / f"{job.uid}.flac"
    dst = out_dir / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return str(rel), len(audio) / SAMPLE_RATE


def _render_star(args):
    return render(*args)


def make_jobs(splits: dict[str, list[str]], counts: dict[str, int], seed: int) -> list[Job]:
    voices = all_voices()
    train_voices = [v for v in voices if not v.held_out()]
    test_voices = [v for v in voices if v.held_out()]
    rng = np.random.default_rng(seed)
    jobs = []
    for split, n in counts.items():
        sents = splits[split]
        if n and not sents:
            raise UserError(f"no sentences left for split {split!r}; give more text or change the fractions")
        pool = test_voices if split == "test" else train_voices
        # Engines are balanced on purpose: espeak has many more voices than flite/festival.
        by_engine = {e: [v for v in pool if v.engine == e] for e in ("espeak", "flite", "festival")}
        engine_p = {"espeak": 0.6, "flite": 0.2, "festival": 0.2}
        engines = [e for e in by_engine if by_engine[e]]
        p = np.array([engine_p[e] for e in engines]) / sum(engine_p[e] for e in engines)
        order = rng.permutation(len(sents))
        for i in range(n):
            text = sents[order[i % len(sents)]]
            engine = engines[rng.choice(len(engines), p=p)]
            voice = by_engine[engine][rng.integers(len(by_engine[engine]))]
            pitch = rng.uniform(25, 75) if engine == "espeak" else rng.uniform(0.8, 1.25)
            jobs.append(Job(uid=f"{split}-{i:06d}", split=split, text=text, voice=voice,
                            rate=float(rng.uniform(0.8, 1.25)), pitch=float(pitch),
                            speed=float(rng.uniform(0.92, 1.08)), gain_db=float(rng.uniform(-14, -1)),
                            snr_db=float(rng.uniform(15, 40)) if rng.random() < 0.7 else float("inf"),
                            seed=int(rng.integers(2**31))))
    return jobs


def check_engines():
    missing = [t for t in ("espeak-ng", "flite", "festival") if shutil.which(t) is None]
    if missing:
        raise UserError(f"missing speech synthesizers: {', '.join(missing)} "
                        "(apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)")


def build_corpus(out: Path, counts: dict[str, int], seed: int = 0, text_files: list[Path] | None = None,
                 workers: int = 2, dev_frac: float = 0.04, test_frac: float = 0.04, progress: bool = True,
                 only: list[str] | None = None) -> dict:
    """Synthesize the corpus; returns {split: number of utterances written}. `only`: render just
    these splits, each exactly as in the whole corpus of `counts` (one random stream plans all
    splits in turn, so the test split of --train 24000 differs from that of --train 0)."""
    from tqdm import tqdm
    check_engines()
    sentences = read_sentences(text_files or default_text_files())
    if not sentences:
        raise UserError("no usable sentences in the text files")
    splits = split_sentences(sentences, seed, dev_frac, test_frac)
    jobs = make_jobs(splits, counts, seed)
    if only is not None:
        jobs = [j for j in jobs if j.split in only]
    out.mkdir(parents=True, exist_ok=True)
    rows = {s: [] for s in counts if only is None or s in only}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_render_star, ((j, out) for j in jobs), chunksize=16)
        for job, res in tqdm(zip(jobs, results), total=len(jobs), desc="synthesizing", disable=not progress):
            if res is not None:
                rows[job.split].append({"path": res[0], "duration": f"{res[1]:.3f}", "voice": job.voice.name,
                                        "engine": job.voice.engine, "text": job.text})
    for split, r in rows.items():
        write_manifest(out / f"{split}.tsv", r)
    return {s: len(r) for s, r in rows.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--train", type=int, default=30000, help="number of training utterances")
    ap.add_argument("--dev", type=int, default=400)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", type=Path, nargs="*", help="text files ('%%'-separated fortunes or plain lines)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", nargs="+", choices=["train", "dev", "test"],
                    help="synthesize only these splits, the same utterances as in the whole corpus of these "
                         "counts (e.g. a model card's test set without its 24000 training utterances)")
    args = ap.parse_args(argv)
    check_option_minimums(args, train=0, dev=0, test=0, workers=1)
    if not args.train + args.dev + args.test:
        raise UserError("--train, --dev and --test are all 0: nothing to synthesize")
    for split in args.only or []:
        if not getattr(args, split):
            raise UserError(f"--only {split} with --{split} 0: nothing to synthesize in it")
    for f in args.text or []:
        if not f.is_file():
            raise UserError(f"text file not found: {f}")
    counts = {"train": args.train, "dev": args.dev, "test": args.test}
    written = build_corpus(args.out, counts, args.seed, args.text, args.workers, only=args.only)
    print(" ".join(f"{s}={n}" for s, n in written.items()), "utterances written to", args.out)
    print("manifest columns:", "\t".join(MANIFEST_COLUMNS))


if __name__ == "__main__":
    cli_main(main)
