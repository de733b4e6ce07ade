"""16 kHz log-mel features: 80 bins, 25 ms window, 10 ms hop, no centering.

Frame i covers samples [i*HOP, i*HOP + WIN): a frame depends only on its own samples, which
is what lets the incremental version reproduce the offline frames exactly.
"""
from __future__ import annotations

import numpy as np

from .audio import SAMPLE_RATE

N_MELS = 80
WIN = 400   # 25 ms
HOP = 160   # 10 ms
N_FFT = 400
FMIN, FMAX = 20.0, 7600.0
LOG_FLOOR = 1e-6

_MEL_BASIS = None
_MEL_TAPS = None
_WINDOW = None


def mel_basis() -> np.ndarray:
    global _MEL_BASIS
    if _MEL_BASIS is None:
        import librosa
        _MEL_BASIS = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return _MEL_BASIS


def _mel_taps() -> tuple[np.ndarray, np.ndarray]:
    """The mel basis as taps: each filter's support is a run of at most 14 FFT bins, so
    ([taps, mels] bin indices, [taps, mels] float64 weights), taps a power of two, zero weights
    past a filter's run."""
    global _MEL_TAPS
    if _MEL_TAPS is None:
        basis = mel_basis().astype(np.float64)
        starts, widths = [], []
        for row in basis:
            nz = np.flatnonzero(row)
            starts.append(nz[0] if nz.size else 0)
            widths.append(nz[-1] + 1 - nz[0] if nz.size else 0)
        taps = 1 << max(1, int(max(widths)) - 1).bit_length()
        bins = np.minimum(np.asarray(starts)[None, :] + np.arange(taps)[:, None], basis.shape[1] - 1)
        weights = np.take_along_axis(basis.T, bins, 0)
        weights[np.arange(taps)[:, None] >= np.asarray(widths)[None, :]] = 0.0
        _MEL_TAPS = (np.ascontiguousarray(bins.reshape(-1)), np.ascontiguousarray(weights))
    return _MEL_TAPS


def _mel_project(power: np.ndarray) -> np.ndarray:
    """[frames, bins] float64 power -> [frames, mels]: each filter's taps multiplied, then
    summed by a fixed tree of elementwise adds, so a frame's sum never depends on how many
    frames come with it (a BLAS matmul's order does). Twice as fast as the dense einsum."""
    bins, weights = _mel_taps()
    taps = weights.shape[0]
    p = np.take(power, bins, axis=1).reshape(power.shape[0], taps, -1)
    p *= weights
    while taps > 1:
        taps //= 2
        p = p[:, :taps] + p[:, taps:]
    return p[:, 0]


BLOCK_FRAMES = 2000  # log_mel's frames per block (20 s)


def num_frames(num_samples: int) -> int:
    return 0 if num_samples < WIN else 1 + (num_samples - WIN) // HOP


def _window() -> np.ndarray:
    global _WINDOW
    if _WINDOW is None:
        import librosa
        _WINDOW = librosa.filters.get_window("hann", WIN, fftbins=True).astype(np.float32)
    return _WINDOW


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[num_samples] float -> [num_frames, 80] float32 log-mel.

    Each frame's numbers depend only on its own samples: frames are windowed and transformed
    row by row (the FFT treats rows independently) and the mel projection sums each filter's
    bins in a fixed order (`_mel_project`), which does not depend on the number of frames (a
    BLAS matmul's does, by a rounding step, which would make streamed frames differ from
    offline ones).

    The window product is float32 (exact: float32 samples times the float32 window, rounded
    once); the FFT, power, mel projection and log run in float64 and round to float32 once at
    the end.  So any implementation that computes in double precision (the C streaming core,
    converters/stream/frontend.c) gets the same float32 frames, bar a double rounding error
    landing on a float32 rounding boundary (about 1e-8 per value): a float32 pipeline here
    differed from it in about 1 value in 8 by one ulp, which was enough to flip a character
    of the int8-activation models' transcripts."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n = num_frames(audio.size)
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.as_strided(audio, shape=(n, WIN), strides=(HOP * 4, 4), writeable=False)
    out = np.empty((n, N_MELS), np.float32)
    # In blocks of frames: the float64 spectra and mel taps of all of them at once took about
    # 2 GB per 10 minutes of audio. The frames do not depend on the blocking.
    for start in range(0, n, BLOCK_FRAMES):
        x = np.fft.rfft((frames[start:start + BLOCK_FRAMES] * _window()).astype(np.float64), n=N_FFT, axis=-1)
        spec = x.real * x.real + x.imag * x.imag
        out[start:start + BLOCK_FRAMES] = np.log(_mel_project(spec) + LOG_FLOOR)
    return out


class IncrementalLogMel:
    """Log-mel over audio arriving in chunks of any length: emits each frame as soon as its
    400 samples are in, keeping only the samples later frames still need. Any chunking of
    the same audio yields exactly the frames of `log_mel` on the whole.

    `accept` computes at once; `push` only holds the samples, and `pull` computes every frame
    they complete. A streaming recognizer pulls when a model step's worth is in: one log_mel
    call per step instead of one per piece of audio (numpy's per-call cost dominated), and
    the same frames, since each frame depends only on its own samples."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._tail = np.zeros(0, np.float32)
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        self._frames = 0

    @property
    def frames_emitted(self) -> int:
        return self._frames

    def push(self, samples) -> None:
        """Hold samples for the next `pull` (NaN or Inf: ValueError, nothing held)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise ValueError("audio chunk contains NaN or Inf samples")
        if samples.size:
            self._held.append(samples)
            self._held_samples += samples.size

    def available(self) -> int:
        """Frames the held samples complete: what `pull` would return."""
        return num_frames(self._tail.size + self._held_samples)

    def pull(self) -> np.ndarray:
        """[frames, 80]: every frame the samples so far complete and no earlier call returned."""
        buf = np.concatenate([self._tail, *self._held]) if self._held else self._tail
        self._held, self._held_samples = [], 0
        n = num_frames(buf.size)
        if n == 0:
            self._tail = buf
            return np.zeros((0, N_MELS), np.float32)
        out = log_mel(buf[:(n - 1) * HOP + WIN])
        self._tail = buf[n * HOP:]
        self._frames += n
        return out

    def accept(self, samples) -> np.ndarray:
        self.push(samples)
        return self.pull()
