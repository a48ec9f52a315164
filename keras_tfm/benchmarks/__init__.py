"""Speed: the benchmark, its references (keras-hub, nanoGPT on PyTorch),
matmul rates and on-device decode latency."""
