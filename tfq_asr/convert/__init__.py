"""Lowering of quantized Keras layers to TFLite custom ops; ``packing`` holds the weight format."""
