"""Log-mel features of a whole manifest, computed once and cached on disk.

Training reads every utterance many times; decoding FLAC and computing log-mel each epoch
would cost more than the model on a 2-core machine, so features are stored as float16 in one
.npz per manifest (invalidated when the manifest changes).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio
from .frontend import log_mel
from .manifest import Utterance, read_manifest
from .text import encode

CACHE_VERSION = 1


@dataclass
class FeatureSet:
    """Features of N utterances concatenated along time, with offsets and encoded labels."""
    feats: np.ndarray       # [sum T, num_mels] float16
    offsets: np.ndarray     # [N + 1] int64
    labels: list            # N lists of class ids
    texts: list             # N strings
    utterances: list        # N Utterance

    def __len__(self):
        return len(self.labels)

    def features(self, i: int) -> np.ndarray:
        return self.feats[self.offsets[i]:self.offsets[i + 1]].astype(np.float32)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def statistics(self):
        """Per-bin mean and std over all frames (float64 accumulation)."""
        mean = np.zeros(self.feats.shape[1])
        sq = np.zeros(self.feats.shape[1])
        for start in range(0, len(self.feats), 1 << 20):
            block = self.feats[start:start + (1 << 20)].astype(np.float64)
            mean += block.sum(0)
            sq += (block ** 2).sum(0)
        n = max(len(self.feats), 1)
        mean /= n
        return mean.astype(np.float32), np.sqrt(np.maximum(sq / n - mean ** 2, 1e-8)).astype(np.float32)


def _features_of(path: Path) -> np.ndarray:
    return log_mel(load_audio(path)).astype(np.float16)


def _manifest_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes() + f"v{CACHE_VERSION}".encode()).hexdigest()[:16]


def load_feature_set(manifest, cache_dir=None, workers: int = 2, progress: bool = True) -> FeatureSet:
    """Features for every utterance of `manifest`, from the cache when it is current."""
    from tqdm import tqdm
    manifest = Path(manifest)
    utts: list[Utterance] = read_manifest(manifest)
    labels = [encode(u.text) for u in utts]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{manifest.stem}-{_manifest_digest(manifest)}.npz"
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    feats, offsets = z["feats"], z["offsets"]
                if len(offsets) == len(utts) + 1 and offsets[-1] == len(feats):
                    return FeatureSet(feats, offsets, labels, [u.text for u in utts], utts)
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
                pass
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunks = list(tqdm(pool.map(_features_of, [u.path for u in utts], chunksize=32), total=len(utts),
                           desc=f"features {manifest.name}", disable=not progress))
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    feats = np.concatenate(chunks) if chunks else np.zeros((0, 80), np.float16)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, feats=feats, offsets=offsets)
        tmp.replace(cache)
    return FeatureSet(feats, offsets, labels, [u.text for u in utts], utts)
