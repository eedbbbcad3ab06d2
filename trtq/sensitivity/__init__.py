"""Per-layer, per-format sensitivity: reference quantizers, weight and Hessian methods."""
