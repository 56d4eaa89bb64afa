"""Measurements that combine capture and geometry (no training, no plotting)."""
from .alignment import layer_alignment

__all__ = ["layer_alignment"]
