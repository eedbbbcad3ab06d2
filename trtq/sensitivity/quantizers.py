"""Reference quantize-dequantize on CPU: each format's own `quantize_weight` (trtq/formats/<name>.py).

The arithmetic the formats share lives in trtq.formats.numerics (re-exported here: it mirrors
ModelOpt's CPU fake quantization operation for operation, and implements NVFP4 by its definition).
Weights are (out_features, in_features); blocks run along in_features.
"""

from __future__ import annotations

import torch

from trtq.formats.base import Format
from trtq.formats.numerics import (  # noqa: F401  (the primitives' public names, kept where callers import them)
    E2M1_GRID,
    E2M1_MAX,
    FP8_E4M3_MAX,
    e2m1_codes,
    fp8_blockwise_2d,
    fp8_e4m3,
    fp8_groupwise,
    int4_blockwise,
    int8_per_channel,
    int_symmetric,
    nvfp4,
    nvfp4_scales,
    round_to_e2m1,
)


def quantize_dequantize(w: torch.Tensor, fmt: Format, group_size: int | None = None) -> torch.Tensor:
    """Q_f(W): the weight as the format stores it, dequantised back to w's dtype."""
    w = w.detach()
    if fmt.block_sizes:
        group_size = group_size or fmt.group_size_for(w.shape[1])
    return fmt.quantize_weight(w, group_size)


def weight_error(w: torch.Tensor, fmt: Format, group_size: int | None = None) -> float:
    """||Q_f(W) - W||_F^2 in float64."""
    w32 = w.detach().float()
    diff = quantize_dequantize(w32, fmt, group_size) - w32
    return float(torch.linalg.vector_norm(diff, dtype=torch.float64) ** 2)
