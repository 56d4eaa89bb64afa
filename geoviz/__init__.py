"""geoviz: a Jupyter workbench for the geometry of CNN feature spaces in PyTorch."""

__version__ = "0.1.0"
