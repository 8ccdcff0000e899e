"""Export discovered cells as standalone PyTorch modules (plus optional safetensors weights)."""

from archsearch.export._export import export_class_name, export_source
from archsearch.export._weights import retrain_weights

__all__ = ["export_class_name", "export_source", "retrain_weights"]
