"""Quantization: the numerics contract (`numerics`), shared by QAT, lowering and the C kernels.
Importing this package does not import TensorFlow; the `*_tf` functions load it on first use."""
from .numerics import (CLIP_GRID, QuantizedWeight, WeightQuantSpec, bits_per_weight, clip_factors,
                       fake_quant_activation_dynamic_tf, fake_quant_activation_static_tf, fake_quant_weight_np,
                       fake_quant_weight_tf, float_matmul_reference, group_index, int_matmul_reference,
                       packed_weight_bytes, quantize_activation_dynamic, quantize_activation_static, quantize_weight)

__all__ = ["CLIP_GRID", "QuantizedWeight", "WeightQuantSpec", "bits_per_weight", "clip_factors",
           "fake_quant_activation_dynamic_tf", "fake_quant_activation_static_tf", "fake_quant_weight_np",
           "fake_quant_weight_tf", "float_matmul_reference", "group_index", "int_matmul_reference",
           "packed_weight_bytes", "quantize_activation_dynamic", "quantize_activation_static", "quantize_weight"]
