"""Weight quantization: packed modules (qlinear), round-to-nearest and GPTQ quantizers."""
