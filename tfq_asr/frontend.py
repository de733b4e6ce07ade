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


def mel_basis() -> np.ndarray:
    global _MEL_BASIS
    if _MEL_BASIS is None:
        import librosa
        _MEL_BASIS = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return _MEL_BASIS


def num_frames(num_samples: int) -> int:
    return 0 if num_samples < WIN else 1 + (num_samples - WIN) // HOP


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[num_samples] float -> [num_frames, 80] float32 log-mel."""
    import librosa
    audio = np.asarray(audio, dtype=np.float32)
    if num_frames(audio.size) == 0:
        return np.zeros((0, N_MELS), np.float32)
    spec = np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hann",
                               center=False)) ** 2
    mel = mel_basis() @ spec
    return np.log(mel + LOG_FLOOR).T.astype(np.float32)
