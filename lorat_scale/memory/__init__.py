"""GPU memory estimates of one LoRAT training step, computed on the CPU with fake tensors."""
