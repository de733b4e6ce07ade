"""Whole-utterance recognition through an offline .tflite (`tools/convert.py` without
--streaming). Its input length is fixed when it is written (`--input-frames`, 10 ms frames:
LiteRT's CompiledModel cannot resize a Conformer, see tfq_asr.convert.lowering), so:

* shorter audio is padded with silence frames (the log floor, as the streaming recognizer pads
  its last chunk) and the logits of the padding are dropped (output frames =
  ceil(frames / subsampling));
* longer audio is refused with an error naming the file's length: cropping would silently drop
  words. Use a streaming file for audio of any length (the main path) or convert with a larger
  --input-frames.

Padding is not free for a non-causal model: attention sees the padded silence, so transcripts
can differ slightly from the Keras model run on the unpadded features.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import prepare_samples
from .decode import check_beam_width, ctc_decode
from .errors import UserError
from .frontend import LOG_FLOOR, N_MELS, log_mel, num_frames
from .streaming import SAMPLE_RATE, metadata_field, open_recognizer_model


def check_offline_metadata(path, info: dict, model) -> None:
    """Refuse offline metadata the recognizer cannot run: a UserError names the file and field."""
    def field(key, kind):
        return metadata_field(path, "offline", info, key, kind)

    input_frames, subsampling = field("input_frames", int), field("subsampling", int)
    features, logits = field("features", str), field("logits", str)
    if input_frames < 1 or subsampling < 1:
        raise UserError(f"{path}: offline metadata input_frames = {input_frames}, subsampling = "
                        f"{subsampling}: both must be >= 1")
    if features not in model.input_names or logits not in model.output_names:
        raise UserError(f"{path}: offline metadata names tensors the model does not have")


class OfflineRecognizer:
    def __init__(self, path, threads: int = 1, beam_width: int = 0):
        self.path = str(path)
        self.name = Path(path).name
        self.model, info = open_recognizer_model(
            path, threads, "offline", "not an offline recognizer file (no offline metadata); "
            "write one with tools/convert.py without --streaming", check_offline_metadata)
        self.info = info
        self.input_frames = info["input_frames"]
        self.subsampling = info["subsampling"]
        self.beam_width = check_beam_width(beam_width)
        self._logits = self.model.output_names.index(info["logits"])

    @property
    def max_seconds(self) -> float:
        return self.input_frames * 0.01

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[T, mels] features (T <= input_frames) -> [ceil(T / subsampling), classes] logits."""
        t = len(features)
        self._check_frames(t)
        x = np.full((1, self.input_frames, N_MELS), np.log(LOG_FLOOR), np.float32)
        x[0, :t] = features
        out = self.model.run({self.info["features"]: x})[self._logits][0]
        return out[:-(-t // self.subsampling)]

    def _check_frames(self, t: int) -> None:
        if t > self.input_frames:
            raise UserError(f"{self.path}: {t / 100:.2f} s of audio is longer than this offline file's fixed "
                            f"input of {self.input_frames} frames ({self.max_seconds:.2f} s); convert with a "
                            "larger --input-frames, or use a streaming file (tools/convert.py --streaming)")

    def transcribe(self, samples, sample_rate: int = SAMPLE_RATE) -> str:
        x = prepare_samples(samples, sample_rate)
        self._check_frames(num_frames(x.size))  # before the spectra of an hour-long array
        feats = log_mel(x)
        if len(feats) == 0:
            return ""
        lg = self.logits(feats)
        return ctc_decode(lg, self.beam_width)

    def close(self) -> None:
        """Frees the model; the recognizer cannot be used afterwards (idempotent)."""
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
