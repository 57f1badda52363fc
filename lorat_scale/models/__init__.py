"""LoRAT models: the network (lorat.py), LoRA (lora.py), weight files (weights.py), assembly (builder.py)."""
from .builder import build_model
from .lorat import LoRAT, merge_for_inference

__all__ = ["LoRAT", "build_model", "merge_for_inference"]
