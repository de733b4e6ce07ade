"""Running lowered models with the TFQ C kernels; ``kernels`` binds the kernel library."""
