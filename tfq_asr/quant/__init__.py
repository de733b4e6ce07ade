"""Quantization: the numerics contract (`numerics`), shared by QAT, lowering and the C kernels."""
from .numerics import (QuantizedWeight, WeightQuantSpec, bits_per_weight, fake_quant_weight_np, int_matmul_reference,
                       packed_weight_bytes, quantize_activation_dynamic, quantize_activation_static, quantize_weight)

__all__ = ["QuantizedWeight", "WeightQuantSpec", "bits_per_weight", "fake_quant_weight_np", "int_matmul_reference",
           "packed_weight_bytes", "quantize_activation_dynamic", "quantize_activation_static", "quantize_weight"]
