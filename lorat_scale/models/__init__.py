"""LoRAT models: the network, LoRA, weights."""
from .lorat import LoRAT, build_model, merge_for_inference

__all__ = ["LoRAT", "build_model", "merge_for_inference"]
