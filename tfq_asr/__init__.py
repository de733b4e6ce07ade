"""tfq-asr: quantize Keras speech recognizers to 8/4/2-bit weights and run them on-device."""
__version__ = "0.1.0"
