"""Reading audio: WAV/FLAC (anything libsndfile reads) at any rate, mono or stereo -> 16 kHz mono float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError

SAMPLE_RATE = 16000
# What audio_files() collects from a folder: formats libsndfile reads.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3")


# soxr's "HQ" quality: librosa.resample's default, and what IncrementalResampler streams
RESAMPLE_QUALITY = "HQ"
# Sample rates we resample from; outside this range a number is more likely a mistake.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000


def check_sample_rate(sample_rate) -> int:
    """`sample_rate` as an int, or a UserError naming it: a whole number of Hz (an integral
    float such as 16000.0 is accepted) in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE."""
    try:
        value = float(sample_rate)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(sample_rate, bool) or not value.is_integer() or \
            not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise UserError(f"sample_rate = {sample_rate!r}: expected a whole number of Hz in "
                        f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")
    return int(value)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == target_sr:
        return np.asarray(audio, dtype=np.float32)
    import soxr
    return soxr.resample(np.asarray(audio, dtype=np.float32), orig_sr, target_sr,
                         RESAMPLE_QUALITY).astype(np.float32)


class IncrementalResampler:
    """Audio at `orig_sr` in chunks of any length -> the same samples at `target_sr` that
    `resample` gives for the whole signal at once (soxr's streaming resampler holds the filter
    state): `push(chunk)` returns what is ready, `flush()` the rest at the end."""

    def __init__(self, orig_sr: int, target_sr: int = SAMPLE_RATE):
        import soxr
        self._stream = soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def push(self, samples: np.ndarray) -> np.ndarray:
        return self._stream.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32))

    def flush(self) -> np.ndarray:
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


def as_float_samples(samples) -> np.ndarray:
    """Samples as float32 in [-1, 1] scale: floats as they are; integer PCM (int16 from a
    microphone, int32, unsigned 8-bit) divided by its full scale, as libsndfile reads files."""
    x = np.asarray(samples)
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / float(-np.iinfo(x.dtype).min)).astype(np.float32)
    if x.dtype.kind == "u":
        half = float(np.iinfo(x.dtype).max // 2 + 1)
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if x.dtype.kind != "f":  # booleans, complex numbers, strings, objects
        raise ValueError(f"audio samples of dtype {x.dtype} are not sound: expected floats or integer PCM")
    return x.astype(np.float32)


# More channels than this on the short axis of a 2-D array means it is not [n, channels].
MAX_CHANNELS = 16


def to_mono(samples: np.ndarray, channels_last: bool = False) -> np.ndarray:
    """[n] as it is; [n, channels] (soundfile's layout) or [channels, n] (librosa's) averaged
    over the channels, the short axis; with channels_last (a stream's chunks, as audio
    callbacks give them) [n, channels] only. ValueError for other shapes."""
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        axis = 1 if channels_last or samples.shape[1] <= samples.shape[0] else 0
        if 1 <= samples.shape[axis] <= MAX_CHANNELS:
            return samples.mean(axis=axis, dtype=np.float64).astype(np.float32)
    layouts = "[n, channels]" if channels_last else "[n, channels] or [channels, n]"
    raise ValueError(f"audio samples of shape {samples.shape}: expected mono [n], or {layouts} with at most "
                     f"{MAX_CHANNELS} channels (averaged)")


def prepare_samples(samples, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Whole-recording samples as the recognizers take them (mono, [n, channels] or
    [channels, n]; float or integer PCM) at `sample_rate` -> 16 kHz mono float32.
    NaN or Inf: ValueError."""
    sample_rate = check_sample_rate(sample_rate)
    samples = to_mono(as_float_samples(samples))
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio contains NaN or Inf samples")
    return resample(samples, sample_rate, SAMPLE_RATE)


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
