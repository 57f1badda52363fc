"""Training pieces: the LoRAT criterion (loss.py), AdamW groups and lr schedule (optim.py), the global-batch split
and DeepSpeed config fill (distributed.py). The loop itself is scripts/train.py."""
