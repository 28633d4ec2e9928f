"""Train PyTorch Model: one loop for single-process and DDP training."""
