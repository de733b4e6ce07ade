"""Running lowered models: ``litert`` (LiteRT CompiledModel with the TFQ ops registered) and
``kernels`` (direct bindings of the C kernel library).

    m = tfq_asr.runtime.load("model.tflite", num_threads=1)
    outputs = m.run(features)            # one array per model input, in signature order
"""
from __future__ import annotations


class LoadedModel:
    """A .tflite ready to run; `run(*inputs)` returns the list of output arrays."""

    def __init__(self, path, num_threads: int = 1):
        from .litert import LiteRtModel
        self.model = LiteRtModel(path, threads=num_threads)
        self.input_names = self.model.input_names
        self.output_names = self.model.output_names

    def run(self, *inputs):
        return self.model.run(list(inputs))

    def close(self) -> None:
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load(path, num_threads: int = 1) -> LoadedModel:
    return LoadedModel(path, num_threads)
