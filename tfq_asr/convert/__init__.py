"""From Keras to .tflite: packing (`packing`), the flatbuffer lowering (`lowering`), exports of
our recognizers (`export`) and LiteRT-native baselines (`baselines`).

The package itself is callable, so the public API reads `tfq_asr.convert(q, path, **kw)`
(= `tfq_asr.convert.export.convert`): a function named like the package would be shadowed by
the package as soon as any of its modules is imported.
"""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, keras_model, path, **kwargs) -> dict:
        """Write a (quantized) Keras model to a .tflite with packed custom ops; returns the
        report (`size_bytes`, per-layer bits and bytes)."""
        from .export import convert
        return convert(keras_model, path, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
