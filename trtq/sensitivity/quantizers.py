"""Reference quantize-dequantize, one function per format, on CPU.

These mirror ModelOpt's fake quantization for the formats ModelOpt runs on CPU
(tests check agreement layer by layer) and implement NVFP4 by its definition,
since ModelOpt's NVFP4 path needs CUDA. Weights are (out_features, in_features);
blocks run along in_features, per-channel scales along out_features.
"""

from __future__ import annotations

import torch

from trtq.registry.formats import Format

FP8_E4M3_MAX = 448.0
E2M1_MAX = 6.0
# The non-negative values an E2M1 (FP4) element can take.
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def fp8_e4m3(x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
    """Per-tensor (or broadcast `amax`) FP8 E4M3 quantize-dequantize."""
    amax = x.abs().amax() if amax is None else amax
    scale = _safe(amax / FP8_E4M3_MAX)
    return (x / scale).to(torch.float8_e4m3fn).to(x.dtype) * scale


def int_symmetric(x: torch.Tensor, bits: int, amax: torch.Tensor) -> torch.Tensor:
    """Symmetric integer quantize-dequantize with scale amax / (2^(bits-1) - 1)."""
    bound = 2 ** (bits - 1) - 1
    scale = _safe(amax / bound)
    return torch.clamp(torch.round(x / scale), -bound - 1, bound) * scale


def int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    return int_symmetric(w, 8, w.abs().amax(dim=1, keepdim=True))


def int4_blockwise(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = w.shape
    blocks = w.reshape(out_features, in_features // group_size, group_size)
    q = int_symmetric(blocks, 4, blocks.abs().amax(dim=-1, keepdim=True))
    return q.reshape(out_features, in_features)


# Midpoints between neighbouring E2M1 values, and whether a tie there rounds up: round to
# nearest, ties to the value with an even mantissa (0.75 -> 1, 1.25 -> 1, 5 -> 4), as cvt does.
_E2M1_MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
_E2M1_TIE_UP = torch.tensor([False, True, False, True, False, True, False])


def _round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    grid = E2M1_GRID.to(x.dtype)
    magnitude = x.abs().clamp(max=E2M1_MAX)
    index = torch.bucketize(magnitude, _E2M1_MIDPOINTS.to(x.dtype))  # ties go down
    at_tie = torch.bucketize(magnitude, _E2M1_MIDPOINTS.to(x.dtype), right=True) != index
    index = index + (at_tie & _E2M1_TIE_UP[index.clamp(max=6)]).long()
    return torch.sign(x) * grid[index]


def nvfp4(w: torch.Tensor, block_size: int = 16) -> torch.Tensor:
    """NVFP4: E2M1 elements, one E4M3 scale per 16-element block, one FP32 global scale.

    global_scale = amax(W) / (6 * 448) so that block scales fit E4M3's range; each
    block scale amax_b / 6 is stored in E4M3 in units of the global scale.
    """
    out_features, in_features = w.shape
    blocks = w.reshape(out_features, in_features // block_size, block_size)
    global_scale = _safe(w.abs().amax() / (E2M1_MAX * FP8_E4M3_MAX))
    block_amax = blocks.abs().amax(dim=-1, keepdim=True)
    block_scale = (block_amax / E2M1_MAX / global_scale).to(torch.float8_e4m3fn).to(w.dtype) * global_scale
    q = _round_to_e2m1(blocks / _safe(block_scale)) * block_scale
    return q.reshape(out_features, in_features)


def quantize_dequantize(w: torch.Tensor, fmt: Format, group_size: int | None = None) -> torch.Tensor:
    """Q_f(W): the weight as the format stores it, dequantised back to w's dtype."""
    w = w.detach()
    if fmt.block_sizes:
        group_size = group_size or fmt.group_size_for(w.shape[1])
    if fmt.name == "bf16":
        return w.to(torch.bfloat16).to(w.dtype)
    if fmt.name == "fp8":
        return fp8_e4m3(w)
    if fmt.name == "int8_sq":
        return int8_per_channel(w)
    if fmt.name == "int4_awq":
        return int4_blockwise(w, group_size)
    if fmt.name == "w4a8_awq":
        # ModelOpt's W4A8 weight quantizer is INT4 blocks followed by a per-tensor FP8 stage.
        return fp8_e4m3(int4_blockwise(w, group_size))
    if fmt.name == "nvfp4":
        return nvfp4(w, group_size)
    raise ValueError(f"no reference quantizer for format {fmt.name}")


def weight_error(w: torch.Tensor, fmt: Format, group_size: int | None = None) -> float:
    """||Q_f(W) - W||_F^2 in float64."""
    w32 = w.detach().float()
    diff = quantize_dequantize(w32, fmt, group_size) - w32
    return float(torch.linalg.vector_norm(diff, dtype=torch.float64) ** 2)
