"""tfq-asr: quantize Keras speech recognizers to 8/4/2-bit weights and run them on-device.

    q = tfq_asr.quantize(keras_model, "w4-sc64-f16", calibration=None)

Heavy modules (TensorFlow, tfmot) load on first use.
"""
__version__ = "0.1.0"


def quantize(keras_model, policy, calibration=None, **kwargs):
    """A Keras model computing `keras_model` quantized by `policy` (see tfq_asr.quant.apply.quantize)."""
    from .quant.apply import quantize as _quantize
    return _quantize(keras_model, policy, calibration, **kwargs)
