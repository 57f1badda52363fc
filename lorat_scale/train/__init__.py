"""Training: the loop (loop.py, ``lorat-scale train``), one training step (step.py), the LoRAT criterion
(loss.py), AdamW groups and lr schedule (optim.py), the global-batch split, DeepSpeed config and run
checks (distributed.py)."""
