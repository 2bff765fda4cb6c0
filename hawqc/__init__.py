"""hawqc: a compiler for quantized neural networks."""
