"""Exactness of a streaming .tflite against the Keras step model it was converted from: the
same utterances, chunk by chunk with the same padding, through LiteRT (our packed ops and
XNNPACK) and through TensorFlow; identical transcripts, WER of each, and the largest logit
difference (issue 4's exactness bar, measured rather than asserted)."""
from __future__ import annotations

import numpy as np


class KerasStepRecognizer:
    """The Keras step model behind the `tfq_asr.streaming.Recognizer` interface (chunk_frames,
    initial_state, step), so that `Stream` drives both the same way."""

    beam_width = 0

    def __init__(self, step_model, info: dict):
        self.model, self.info = step_model, info
        self.chunk_frames = int(info["chunk_frames"])
        names = list(step_model.input_names)
        wanted = [info["features"]] + [s["input"] for s in info["states"]]
        if sorted(names) != sorted(wanted):
            raise ValueError(f"the Keras step model's inputs {names} are not the file's {wanted}")
        self._names = names
        self.steps = 0

    def initial_state(self) -> dict:
        return {s["input"]: np.zeros(s["shape"], np.float32) for s in self.info["states"]}

    def step(self, frames: np.ndarray, state: dict):
        feeds = {self.info["features"]: frames[None].astype(np.float32), **state}
        outs = self.model([feeds[n] for n in self._names], training=False)
        outs = [np.asarray(o) for o in outs]
        self.steps += 1
        # Keras order: logits, then the states in the metadata's order (streaming_metadata)
        return outs[0][0], {s["input"]: outs[1 + i] for i, s in enumerate(self.info["states"])}


def _run(recognizer, audio: np.ndarray):
    """(transcript, logits of every step stacked) of one utterance."""
    from ..streaming import Stream
    logits = []
    step = recognizer.step

    def recording(frames, state):
        out, nxt = step(frames, state)
        logits.append(np.asarray(out))
        return out, nxt

    recognizer.step = recording
    try:
        s = Stream(recognizer)
        s.accept(audio)
        text = s.finish()
    finally:
        recognizer.step = step
    return text, np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)


# what compare_streaming can compare the Keras step model with, and how reports name it
VERSUS = {"tflite": ".tflite, LiteRT", "keras_ulp": "Keras, features one ulp up"}


def nudged_one_ulp(recognizer):
    """`recognizer` with every input feature moved to the next float32 up before each step:
    how far one last-bit difference alone moves the transcripts (compare_streaming's
    versus="keras_ulp", the yardstick for the file's differences from Keras)."""
    step = recognizer.step

    def nudged(frames, state):
        f = np.asarray(frames, np.float32)
        return step(np.nextafter(f, np.float32(np.inf)), state)

    recognizer.step = nudged
    return recognizer


def compare_streaming(model, tflite_path, manifest, limit: int | None = None, lstm_steps: int = 8,
                      progress: bool = True, versus: str = "tflite") -> dict:
    """`model`: the AsrModel the streaming file `tflite_path` was exported from (with its own
    chunk size and, for an LSTM, `lstm_steps` steps per call). versus="keras_ulp" compares the
    Keras step model with itself on features one ulp up instead of with the file (whose
    metadata still gives the states)."""
    if versus not in VERSUS:
        raise ValueError(f"versus={versus!r}: one of {', '.join(VERSUS)}")
    from tqdm import tqdm
    from ..audio import load_audio
    from ..convert.export import streaming_step_model
    from ..models.streaming import chunk_frames
    from ..manifest import read_manifest
    from ..streaming import Recognizer
    from .metrics import error_rates
    lite = Recognizer(tflite_path)
    try:
        want = chunk_frames(model.config, lstm_steps)
        if lite.chunk_frames != want:
            raise ValueError(f"{tflite_path}: {lite.chunk_frames} frames per step, but {model.name} "
                             f"exports {want}: compare a file written with the model's own chunk "
                             "(and --lstm-steps)")
        step, policy = streaming_step_model(model, lstm_steps=lstm_steps)
        keras_rec = KerasStepRecognizer(step, lite.info)
        other = lite if versus == "tflite" else nudged_one_ulp(KerasStepRecognizer(step, lite.info))
        rows = []
        for u in tqdm(read_manifest(manifest, limit), desc="exactness", disable=not progress):
            audio = load_audio(u.path)
            t_other, l_other = _run(other, audio)
            t_keras, l_keras = _run(keras_rec, audio)
            if l_other.shape != l_keras.shape:
                raise ValueError(f"{u.path}: logits {l_other.shape} from {versus}, {l_keras.shape} from Keras")
            rows.append({"audio": str(u.path), "ref": u.text, versus: t_other, "keras": t_keras,
                         "max_logit_diff": float(np.abs(l_other - l_keras).max()) if l_other.size else 0.0,
                         "logit_scale": float(np.abs(l_keras).max()) if l_keras.size else 0.0})
    finally:
        lite.close()
    if not rows:
        raise ValueError(f"{manifest}: no utterances")
    refs = [r["ref"] for r in rows]
    return {"model": model.name, "policy": policy, "file": str(tflite_path), "versus": versus,
            "utterances": len(rows), "identical": sum(r[versus] == r["keras"] for r in rows),
            f"wer_{versus}": error_rates(refs, [r[versus] for r in rows])["wer"],
            "wer_keras": error_rates(refs, [r["keras"] for r in rows])["wer"],
            "max_logit_diff": max(r["max_logit_diff"] for r in rows),
            "median_logit_diff": float(np.median([r["max_logit_diff"] for r in rows])),
            "rows": rows}
