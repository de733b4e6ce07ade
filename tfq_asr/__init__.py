"""tfq-asr: quantize Keras speech recognizers to 8/4/2-bit weights and run them on-device.

    q = tfq_asr.quantize(keras_model, "w4-sc64-f16", calibration=None)
    report = tfq_asr.convert(q, "model.tflite", input_shape=(1, 400, 80))   # report["size_bytes"]
    m = tfq_asr.runtime.load("model.tflite", num_threads=1); outputs = m.run(features)
    r = tfq_asr.Recognizer("stream.tflite"); s = r.stream(); s.accept(samples); s.partial(); s.finish()

Heavy modules (TensorFlow, tfmot) load on first use.
"""
__version__ = "0.1.0"


def quantize(keras_model, policy, calibration=None, **kwargs):
    """A Keras model computing `keras_model` quantized by `policy` (see tfq_asr.quant.apply.quantize)."""
    from .quant.apply import quantize as _quantize
    return _quantize(keras_model, policy, calibration, **kwargs)


def __getattr__(name):
    # `tfq_asr.runtime.load(...)` and `tfq_asr.convert(q, path)` without importing TensorFlow
    # up front: the subpackages load on first use (tfq_asr.convert is a callable package).
    import importlib
    if name in ("runtime", "convert", "streaming"):
        return importlib.import_module(f".{name}", __name__)
    if name == "Recognizer":  # the streaming recognizer of a .tflite written with --streaming
        return importlib.import_module(".streaming", __name__).Recognizer
    raise AttributeError(name)
