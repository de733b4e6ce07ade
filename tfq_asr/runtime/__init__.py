"""Running lowered models: ``litert`` (LiteRT CompiledModel with the TFQ ops registered) and
``kernels`` (direct bindings of the C kernel library).

    m = tfq_asr.runtime.load("model.tflite", num_threads=1)
    outputs = m.run(features)            # one array per model input, in the Keras model's order
"""
from __future__ import annotations


class LoadedModel:
    """A .tflite ready to run; `run(*inputs)` takes one array per input and returns the list of
    output arrays, both in the order of the Keras model the file was converted from (kept in
    the file's metadata: the converter orders a signature's outputs by name), or in signature
    order for a file without it.  `input_names` / `output_names`, `input_shapes` /
    `input_dtypes` and `output_dtypes` are in that order."""

    def __init__(self, path, num_threads: int = 1):
        from .litert import LiteRtModel
        self.model = LiteRtModel(path, threads=num_threads)
        info = self.model._info
        self.input_names = _order(info.get("inputs"), self.model.input_names)
        self.output_names = _order(info.get("outputs"), self.model.output_names)
        self._out_index = [self.model.output_names.index(n) for n in self.output_names]

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Shapes to feed (-1 marks a dimension the file leaves dynamic)."""
        shapes = dict(zip(self.model.input_names, self.model.input_shapes))
        return [shapes[n] for n in self.input_names]

    @property
    def input_dtypes(self) -> list:
        dtypes = dict(zip(self.model.input_names, self.model.input_dtypes))
        return [dtypes[n] for n in self.input_names]

    @property
    def output_dtypes(self) -> list:
        return [self.model.output_dtypes[i] for i in self._out_index]

    def run(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.model.path}: {len(self.input_names)} inputs expected "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        outs = self.model.run(dict(zip(self.input_names, inputs)))
        return [outs[i] for i in self._out_index]

    def close(self) -> None:
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _order(names, signature_names) -> list[str]:
    """`names` (the metadata's Keras order) where it lists exactly the signature's names."""
    if isinstance(names, list) and sorted(map(str, names)) == sorted(signature_names):
        return [str(n) for n in names]
    return list(signature_names)


def load(path, num_threads: int = 1) -> LoadedModel:
    return LoadedModel(path, num_threads)
