"""TensorFlow side of the numerics contract, for quantization-aware training.

The implementations live next to their NumPy twins in `numerics.py` (one place for the
formula); this module is the TensorFlow-facing import path."""
from .numerics import fake_quant_activation_dynamic_tf, fake_quant_activation_static_tf, fake_quant_weight_tf

__all__ = ["fake_quant_activation_dynamic_tf", "fake_quant_activation_static_tf", "fake_quant_weight_tf"]
