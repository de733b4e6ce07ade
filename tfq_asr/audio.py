"""Reading audio: WAV/FLAC (anything libsndfile reads) at any rate, mono or stereo -> 16 kHz mono float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError

SAMPLE_RATE = 16000
# What audio_files() collects from a folder: formats libsndfile reads.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3")


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == target_sr:
        return np.asarray(audio, dtype=np.float32)
    import librosa
    return librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr,
                            res_type="soxr_hq").astype(np.float32)


def as_float_samples(samples) -> np.ndarray:
    """Samples as float32 in [-1, 1] scale: floats as they are; integer PCM (int16 from a
    microphone, int32, unsigned 8-bit) divided by its full scale, as libsndfile reads files."""
    x = np.asarray(samples)
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / float(-np.iinfo(x.dtype).min)).astype(np.float32)
    if x.dtype.kind == "u":
        half = float(np.iinfo(x.dtype).max // 2 + 1)
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if x.dtype.kind == "b":
        raise ValueError("audio samples are booleans, not sound")
    return x.astype(np.float32)


def load_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load a file as mono float32 at `sample_rate`; UserError if missing, unreadable or empty."""
    import soundfile as sf
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an audio file: pass the files in it")
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors are varied; the message is what matters
        raise UserError(f"cannot read audio file {path}: {err}") from None
    if data.shape[0] == 0:
        raise UserError(f"audio file is empty (zero samples): {path}")
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise UserError(f"audio file contains NaN or Inf samples: {path}")
    return resample(mono, sr, sample_rate)


def audio_files(folder) -> list[Path]:
    """The audio files (AUDIO_SUFFIXES, any case) in `folder` and below, sorted by path;
    UserError if the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"audio folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below")
    return files
