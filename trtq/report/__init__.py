"""HTML reports: one plan on one GPU, and the hardware comparison across GPUs (see render.py)."""
