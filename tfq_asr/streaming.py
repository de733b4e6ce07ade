"""Streaming recognition through a streaming .tflite (`tools/convert.py --streaming`):

    r = Recognizer("conformer-w2-stream.tflite")
    s = r.stream()
    s.accept(samples)        # any number of times, chunks of any length (float or int16)
    s.partial()              # text so far
    s.finish()               # final text; the stream accepts nothing more
    r.stream(sample_rate=48000)   # audio at another rate, resampled as it streams
    r.transcribe(samples, sample_rate)

The recognizer owns the model state: the incremental log-mel turns audio into exactly the
offline frames, every `chunk_frames` frames run one step of the model (its state goes from
the outputs back to the inputs), and an incremental CTC decoder turns logits into text. The
last partial chunk is padded with silence frames at `finish`. So the transcript is the same
for any chunking of the audio, and equal to running the same file over the whole utterance.
"""
from __future__ import annotations

import numpy as np

from .audio import IncrementalResampler, as_float_samples, check_sample_rate, prepare_samples, to_mono
from .decode import BeamDecoder, GreedyDecoder, check_beam_width
from .errors import UserError
from .frontend import LOG_FLOOR, N_MELS, IncrementalLogMel

SAMPLE_RATE = 16000
# Stream.accept hands the frontend at most this many samples at a time, so that what it holds
# between steps (the samples of one push, the frames they complete) stays bounded however long
# a chunk is. (The 1.4 GB that a 10-minute array once took was log_mel's spectra, computed in
# blocks now; beyond that, one push of it still took 312 MB against 234 in pieces, growing with
# the length.) Any chunking gives the same transcript.
PIECE_SAMPLES = 10 * SAMPLE_RATE


class Recognizer:
    def __init__(self, path, threads: int = 1, beam_width: int = 0, profile: bool = False):
        from pathlib import Path
        self.path = str(path)
        self.name = Path(path).name
        self.model, info = open_recognizer_model(
            path, threads, "streaming", "not a streaming model (no streaming state in its metadata); "
            "export one with tools/convert.py --streaming", check_streaming_metadata, profile)
        self.info = info
        self.chunk_frames = int(info["chunk_frames"])
        self.beam_width = check_beam_width(beam_width)
        names = self.model.input_names
        self._out_index = {n: i for i, n in enumerate(self.model.output_names)}
        # One step on zeros at load, as the C core does: our ops repack their weights and size
        # their workspaces on first use (XNNPACK packs at load), which would otherwise land in
        # the first chunk's latency; a file whose op fails is refused here.
        self.steps = 0
        features_shape = self.model.input_shapes[names.index(info["features"])]
        self.step(np.zeros(features_shape[1:], np.float32), self.initial_state())
        self.steps = 0

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_frames * 0.01

    def initial_state(self) -> dict:
        return {s["input"]: np.zeros(s["shape"], np.float32) for s in self.info["states"]}

    def step(self, frames: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        """One chunk [chunk_frames, mels] -> (logits [T', classes], next state)."""
        feeds = {self.info["features"]: frames[None].astype(np.float32), **state}
        outs = self.model.run(feeds)
        self.steps += 1
        logits = outs[self._out_index[self.info["logits"]]][0]
        nxt = {s["input"]: outs[self._out_index[s["output"]]] for s in self.info["states"]}
        return logits, nxt

    def stream(self, sample_rate: int = SAMPLE_RATE) -> "Stream":
        """A new utterance; its chunks are mono samples at `sample_rate`, resampled to the
        model's 16 kHz as they arrive (the same samples as resampling the whole audio)."""
        return Stream(self, sample_rate)

    def transcribe(self, samples, sample_rate: int = SAMPLE_RATE) -> str:
        """The whole recording's transcript (the same as streaming it in any chunks, in the
        memory of streaming it, however long it is)."""
        s = self.stream()
        s.accept(prepare_samples(samples, sample_rate))
        return s.finish()

    def close(self) -> None:
        """Frees the model; the recognizer cannot be used afterwards (idempotent)."""
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_recognizer_model(path, threads: int, section: str, missing: str, check, profile: bool = False):
    """(LiteRtModel, its tfq_asr metadata section `section`) of a recognizer file, after
    check(path, section, model) has passed. A file without that section is refused with
    "{path}: {missing}"; either refusal closes the model again."""
    from .runtime.litert import LiteRtModel
    model = LiteRtModel(path, threads=threads, profile=profile)
    try:
        info = model._info.get(section)  # noqa: SLF001
        if not info:
            raise UserError(f"{path}: {missing}")
        check(path, info, model)
    except UserError:
        model.close()
        raise
    return model, info


def metadata_field(path, section: str, obj, key: str, kind: type, where: str = ""):
    """obj[key] of a recognizer file's metadata section, refused with a UserError naming the
    file and the field when it is missing or not of `kind` (int means a JSON integer)."""
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{path}: {section} metadata has no {where}{key}; re-export the file with "
                        "tools/convert.py")
    v = obj[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise UserError(f"{path}: {section} metadata {where}{key} = {v!r} is not "
                        f"{'an integer' if kind is int else 'a ' + kind.__name__}")
    return v


def check_streaming_metadata(path, info: dict, model) -> None:
    """Refuse streaming metadata the Recognizer cannot run (the C core checks the same, in
    stream.c read_metadata): the fields it reads with their types, tensor names the model has,
    state shapes equal to the model's, features of chunk_frames x N_MELS. A UserError names the
    file and the field, instead of a KeyError from deep inside a step."""
    def bad(what):
        raise UserError(f"{path}: streaming metadata {what}; re-export it with tools/convert.py --streaming")

    def field(obj, key, kind, where=""):
        return metadata_field(path, "streaming", obj, key, kind, where)

    chunk = field(info, "chunk_frames", int)
    if not 1 <= chunk <= 100000:
        bad(f"chunk_frames = {chunk} is not in 1..100000")
    ins, outs = model.input_names, model.output_names
    feats, logits = field(info, "features", str), field(info, "logits", str)
    if feats not in ins:
        bad(f"names features input {feats!r} the model does not have (inputs {ins})")
    if logits not in outs:
        bad(f"names logits output {logits!r} the model does not have")
    states = field(info, "states", list)
    used_in, used_out = {feats}, {logits}
    for i, st in enumerate(states):
        where = f"states[{i}]."
        sin, sout = field(st, "input", str, where), field(st, "output", str, where)
        shape = field(st, "shape", list, where)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            bad(f"{where}shape = {shape!r} is not a list of integers >= 1")
        if sin not in ins or sout not in outs:
            bad(f"names state {'input' if sin not in ins else 'output'} "
                f"{sin if sin not in ins else sout!r} the model does not have")
        if sin in used_in or sout in used_out:
            bad(f"{where[:-1]} uses tensors another state, the features or the logits use")
        used_in.add(sin)
        used_out.add(sout)
        declared = tuple(model.input_shapes[ins.index(sin)])
        if declared != tuple(shape):
            bad(f"{where}shape {shape} differs from the model's input {sin!r} {list(declared)}")
    if len(ins) != 1 + len(states):
        bad(f"names {1 + len(states)} inputs (features + states), the model has {len(ins)}")
    n = int(np.prod(model.input_shapes[ins.index(feats)]))
    if n != chunk * N_MELS:
        bad(f"features input {feats!r} holds {n} values, chunk_frames x n_mels = {chunk} x {N_MELS} expected")


class Stream:
    """One utterance in progress. Not thread safe."""

    def __init__(self, recognizer: Recognizer, sample_rate: int = SAMPLE_RATE):
        self.r = recognizer
        self.sample_rate = check_sample_rate(sample_rate)
        self.resampler = IncrementalResampler(self.sample_rate) if self.sample_rate != SAMPLE_RATE else None
        self.frontend = IncrementalLogMel()
        self.decoder = BeamDecoder(recognizer.beam_width) if recognizer.beam_width > 1 else GreedyDecoder()
        self.state = recognizer.initial_state()
        self.pending = np.zeros((0, N_MELS), np.float32)
        self.finished = False
        self.samples = 0

    def accept(self, samples) -> None:
        """Feed samples at the stream's sample rate (any length, also 0), mono [n] or
        [n, channels] as audio callbacks give them (the channels averaged): floats in
        [-1, 1], or integer PCM (int16 as from a microphone), scaled to that range by
        tfq_asr.audio.as_float_samples. NaN/Inf samples raise ValueError and leave the stream
        as it was; float samples beyond [-1, 1] are used as they are (the frontend is
        scale-aware only through the log). `samples` counts what was accepted, at its rate."""
        if self.finished:
            raise UserError("accept() after finish(): start a new stream with Recognizer.stream()")
        x = to_mono(as_float_samples(samples), channels_last=True)
        if not np.all(np.isfinite(x)):  # before the resampler or the frontend holds any of it
            raise ValueError("audio chunk contains NaN or Inf samples; nothing was consumed")
        self.samples += x.size
        for start in range(0, x.size, PIECE_SAMPLES):  # an hour-long chunk in flat memory too
            piece = x[start:start + PIECE_SAMPLES]
            self._push(self.resampler.push(piece) if self.resampler else piece)

    def _push(self, x: np.ndarray) -> None:
        self.frontend.push(x)
        # the frames are computed when a model step's worth is in (the same frames, fewer calls)
        if len(self.pending) + self.frontend.available() >= self.r.chunk_frames:
            self._pull_frames()
            self._run_full_chunks()

    def _pull_frames(self) -> None:
        frames = self.frontend.pull()
        if frames.size:
            self.pending = np.concatenate([self.pending, frames])

    def _run_full_chunks(self) -> None:
        n = self.r.chunk_frames
        while len(self.pending) >= n:
            logits, self.state = self.r.step(self.pending[:n], self.state)
            self.pending = self.pending[n:]
            self.decoder.accept(logits)

    def partial(self) -> str:
        return self.decoder.text

    def finish(self) -> str:
        if self.finished:
            raise UserError("finish() called twice on one stream")
        self.finished = True
        if self.resampler:
            self._push(self.resampler.flush())
        self._pull_frames()
        if len(self.pending):
            pad = np.full((self.r.chunk_frames - len(self.pending), N_MELS), np.log(LOG_FLOOR), np.float32)
            self.pending = np.concatenate([self.pending, pad])
            self._run_full_chunks()
        return self.decoder.finish()


class TfliteTranscriber:
    """A recognizer .tflite with the interface the evaluation and CLI tools use for Keras models:
    `name`, `transcribe(audio, beam_width=0)` for 16 kHz mono float audio. A streaming file
    runs through `Recognizer`; an offline (fixed-length) file through
    `tfq_asr.offline.OfflineRecognizer` (shorter audio padded with silence, longer refused)."""

    def __init__(self, path, threads: int = 1):
        from pathlib import Path
        from .runtime.litert import read_tfq_metadata
        self.name = Path(path).name
        self.path = path
        self.threads = threads
        try:
            info = read_tfq_metadata(path) or {}
        except Exception as err:  # noqa: BLE001  (any parse failure: not a flatbuffer)
            raise UserError(f"{path}: not a readable .tflite file ({err})") from None
        if "streaming" in info:
            self._kind = Recognizer
        elif "offline" in info:
            from .offline import OfflineRecognizer
            self._kind = OfflineRecognizer
        else:
            raise UserError(f"{path}: not a recognizer file (no tfq_asr streaming or offline metadata); "
                            "write one with tools/convert.py")
        self._recognizers: dict[int, object] = {}

    def transcribe(self, audio, beam_width: int = 0) -> str:
        r = self._recognizers.get(beam_width)
        if r is None:
            r = self._recognizers[beam_width] = self._kind(self.path, self.threads, beam_width)
        return r.transcribe(audio)


def load_any(model, threads: int = 1):
    """An AsrModel for a bundled name or model folder, a TfliteTranscriber for a .tflite file
    (streaming or offline)."""
    from pathlib import Path
    if str(model).endswith(".tflite"):
        if not Path(model).is_file():
            raise UserError(f"no such model file: {model}")
        return TfliteTranscriber(model, threads)
    from .models import load_pretrained
    return load_pretrained(model)
