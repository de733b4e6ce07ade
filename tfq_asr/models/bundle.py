"""A model on disk: a folder with config.json (architecture, vocabulary, frontend) and
weights.npz, plus MODEL_CARD.md for bundled models. Bundled models live in tfq_asr/pretrained/."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .. import frontend, text
from .config import config_from_dict, config_to_dict

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
FORMAT_VERSION = 1
# Longer utterances go through a streaming Conformer's step model, chunk by chunk: the whole-
# utterance pass holds [T, T] attention scores (conformer-ctc-xs: 0.3 GB at 80 s of audio,
# 2.7 GB at 4 minutes, an out-of-memory crash at about 15), the step model a fixed state.
LONG_UTTERANCE_FRAMES = 6000  # 60 s


def _frontend_dict() -> dict:
    return {"sample_rate": 16000, "num_mels": frontend.N_MELS, "win": frontend.WIN, "hop": frontend.HOP,
            "fmin": frontend.FMIN, "fmax": frontend.FMAX}


@dataclass
class AsrModel:
    """A Keras recognizer with what it needs to turn audio into text."""
    name: str
    config: object
    keras_model: object
    quantization: dict | None = None  # policy and method of a quantized checkpoint
    _infer: object = field(default=None, repr=False, compare=False)  # the traced inference graph
    _step: object = field(default=None, repr=False, compare=False)  # streaming step model, built on demand

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[T, num_mels] features -> [T', num_classes] logits (batch of one, no padding).
        Beyond LONG_UTTERANCE_FRAMES a streaming Conformer runs chunk by chunk through its
        step model, in flat memory: the same chunked attention, so the logits agree with the
        whole-utterance pass within float rounding (and, quantized, its int8 rounding flips),
        but for the last frame when the utterance ends inside a chunk (its inputs end in the
        silence that pads the chunk, where the one pass has its convolution's padding)."""
        if features.shape[0] > LONG_UTTERANCE_FRAMES and self.config.kind == "conformer" and self.config.streaming:
            return self._streamed_logits(features)
        if self._infer is None:
            import tensorflow as tf
            # One graph for every length: eager Keras dispatches op by op, about 10x slower here.
            self._infer = tf.function(lambda x: self.keras_model(x, training=False), reduce_retracing=True,
                                      input_signature=[tf.TensorSpec([1, None, features.shape[-1]], tf.float32)])
        return self._infer(features[None].astype(np.float32)).numpy()[0]

    def _streamed_logits(self, features: np.ndarray) -> np.ndarray:
        from . import output_length
        from .streaming import run_streaming_keras
        if self._step is None:
            from ..convert.export import streaming_step_model
            self._step, _ = streaming_step_model(self)
        # the last chunk is padded with silence; its extra frames are not the utterance's
        return run_streaming_keras(self._step, self.config, features)[:output_length(features.shape[0], self.config)]

    def transcribe_features(self, features: np.ndarray, beam_width: int = 0) -> str:
        from .. import decode
        if features.shape[0] == 0:
            return ""
        lg = self.logits(features)
        return decode.ctc_decode(lg, beam_width)

    def transcribe(self, audio: np.ndarray, beam_width: int = 0, sample_rate: int = 16000) -> str:
        """Audio -> text: samples as the .tflite recognizers take them (float or integer PCM,
        mono or [n, channels] / [channels, n], at `sample_rate`; tfq_asr.audio.prepare_samples)."""
        from ..audio import prepare_samples
        return self.transcribe_features(frontend.log_mel(prepare_samples(audio, sample_rate)), beam_width)

    def with_input_mode(self, field: str, mode: str) -> "AsrModel":
        """This quantized checkpoint with one kind of layer input re-quantized: `field`
        "conv_activations" (mode "dynamic" is the -convq8 suffix) or "lstm_activations"
        (-lstmq8), `mode` "dynamic" or "none". The integer weights stay; only those inputs
        change (post-training for them: measure the accuracy)."""
        from ..quant import apply
        from ..quant.policy import INPUT_MODE_SUFFIXES
        if field not in INPUT_MODE_SUFFIXES:
            raise UserError(f"{self.name}: unknown input kind {field!r} ({' or '.join(INPUT_MODE_SUFFIXES)})")
        if not self.quantization:
            raise UserError(f"{self.name} is not a quantized checkpoint: quantize it first")
        q = apply.with_input_mode(self.keras_model, field, mode)
        if q is self.keras_model:
            return self
        return AsrModel(self.name, self.config, q, {**self.quantization, "policy": apply.policy_of(q).to_dict()})


# Quantizer state (clipping factors, calibrated ranges, step counters) is kept at full
# precision whatever `dtype` is: it defines the quantization grid.
_EXACT_WEIGHTS = ("_clip:0", "/input_max:0", "/optimizer_step:0")


def _save_weights(keras_model, path: Path, dtype: str) -> None:
    """All weights (trainable or not) by variable name, stored as float32 or float16."""
    arrays = {w.name: (w.numpy() if w.name.endswith(_EXACT_WEIGHTS) else w.numpy().astype(dtype))
              for w in keras_model.weights}
    if len(arrays) != len(keras_model.weights):
        raise ValueError("model has duplicate weight names; cannot save by name")
    np.savez(path, **arrays)


def _load_weights(keras_model, path: Path) -> None:
    with np.load(path) as z:
        stored = dict(z.items())
    for w in keras_model.weights:
        if w.name not in stored:
            raise UserError(f"{path}: no weight {w.name!r} (the file belongs to another architecture)")
        value = stored.pop(w.name)
        if tuple(value.shape) != tuple(w.shape):
            raise UserError(f"{path}: weight {w.name!r} has shape {value.shape}, the model expects {tuple(w.shape)}")
        w.assign(value.astype(w.dtype.as_numpy_dtype))
    if stored:
        raise UserError(f"{path}: weights the model does not have: {', '.join(sorted(stored)[:5])}")


def check_model_folder_target(folder) -> Path:
    """`folder` as a Path if a model may be saved there: it does not exist, is empty, or is a
    model folder (config.json) that the save replaces. Anything else is refused: replacing it
    would delete the user's files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a model folder; give a folder path")
    if folder.is_dir() and not (folder / "config.json").is_file() and any(folder.iterdir()):
        raise UserError(f"{folder} exists and is not a model folder (no config.json); refusing to replace "
                        "its files: give a new or empty folder")
    return folder


def save_model(model: AsrModel, folder, extra: dict | None = None, dtype: str = "float32") -> Path:
    """Write config.json + weights.npz into `folder` atomically (a temporary folder, then rename).
    An existing model folder is replaced (its MODEL_CARD.md kept); any other non-empty folder
    is refused (check_model_folder_target).

    dtype "float16" halves the file (bundled models use it; their reported WERs are measured
    with the float16-stored weights)."""
    folder = check_model_folder_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        meta = {"format_version": FORMAT_VERSION, "name": model.name, "model": config_to_dict(model.config),
                "vocabulary": list(text.VOCAB), "frontend": _frontend_dict(), "weights_dtype": dtype,
                **({"quantization": model.quantization} if model.quantization else {}), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        _save_weights(model.keras_model, tmp / "weights.npz", dtype)
        for keep in ("MODEL_CARD.md",):  # files written by hand next to a bundle survive a re-save
            if (folder / keep).exists():
                shutil.copy2(folder / keep, tmp / keep)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_model(folder) -> AsrModel:
    """Load a model folder (config.json + weights.npz)."""
    from . import build_model
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"not a model folder (no config.json): {folder}")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{cfg_path}: invalid JSON ({err})") from None
    if meta.get("vocabulary") != list(text.VOCAB):
        raise UserError(f"{cfg_path}: vocabulary differs from this toolkit's ({len(text.VOCAB)} characters)")
    if meta.get("frontend") != _frontend_dict():
        raise UserError(f"{cfg_path}: frontend settings {meta.get('frontend')} differ from this toolkit's")
    cfg = config_from_dict(meta.get("model", {}))
    km = build_model(cfg)
    quant = meta.get("quantization")
    if quant is not None:  # a quantized checkpoint: rebuild the quantized model, then load
        from ..quant.apply import quantize
        try:
            km = quantize(km, quant["policy"])
        except (KeyError, ValueError) as err:
            raise UserError(f"{cfg_path}: invalid quantization section ({err})") from None
    weights = folder / "weights.npz"
    if not weights.is_file():
        raise UserError(f"model folder has no weights.npz: {folder}")
    try:
        _load_weights(km, weights)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        # a damaged archive (bad CRC, truncated, not a zip) is the user's file to replace
        raise UserError(f"cannot load weights {weights}: {type(err).__name__}: {err}") from None
    return AsrModel(name=meta.get("name", folder.name), config=cfg, keras_model=km, quantization=quant)


def list_pretrained() -> list[str]:
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def model_folder(name_or_path) -> Path | None:
    """The folder load_pretrained reads for a bundled name or a model folder path; None if
    there is none."""
    if (PRETRAINED_DIR / str(name_or_path)).is_dir() and "/" not in str(name_or_path):
        return PRETRAINED_DIR / str(name_or_path)
    p = Path(name_or_path)
    return p if p.is_dir() else None


def check_not_input(option: str, out, model) -> None:
    """A UserError if writing `out` would overwrite the model `model` (a bundled name or a
    model folder) is read from: its folder itself, or a file in it. The input is never
    modified."""
    folder = model_folder(model)
    if folder is None:
        return
    folder, target = folder.resolve(), Path(out).resolve()
    if target == folder or (target.exists() and folder in target.parents):
        raise UserError(f"{option} {out} would overwrite the input model {model} ({folder}); write it elsewhere")


def load_pretrained(name_or_path) -> AsrModel:
    """A bundled model by name ("conformer-ctc-xs") or a model folder by path."""
    folder = model_folder(name_or_path)
    if folder is not None:
        return load_model(folder)
    known = ", ".join(list_pretrained()) or "none bundled"
    raise UserError(f"unknown model {str(name_or_path)!r}: not a bundled name ({known}) nor a model folder")
