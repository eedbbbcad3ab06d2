"""The arithmetic formats share, on CPU: reference quantize-dequantize primitives and ModelOpt's packings.

These mirror ModelOpt's fake quantization for the formats ModelOpt runs on CPU
(tests check agreement layer by layer) and implement NVFP4 by its definition,
since ModelOpt's NVFP4 path needs CUDA. Weights are (out_features, in_features);
blocks run along in_features, per-channel scales along out_features.

Imported only inside a format's methods (torch is heavy; `trtq --help` and `trtq plan` stay torch-free).
"""

from __future__ import annotations

import torch

FP8_E4M3_MAX = 448.0
E2M1_MAX = 6.0
# The non-negative values an E2M1 (FP4) element can take.
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
# Midpoints between neighbouring E2M1 values; a tie at 0.75, 1.75 or 3.5 rounds up to the
# value with an even mantissa (1.0, 2.0, 4.0), at the others down (round half to even).
_E2M1_BOUNDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
_E2M1_ROUND_UP_TIES = _E2M1_BOUNDS[[1, 3, 5]]
# ModelOpt treats an amax at or below this as zero (the smallest FP16 subnormal).
_ZERO_AMAX = 1.0 / (1 << 24)

# The arithmetic below follows ModelOpt 0.47's CPU fake quantization operation for
# operation (modelopt/torch/quantization/tensor_quant.py: _fp8_eager, _tensor_quant;
# qtensor/nvfp4_tensor.py: NVFP4QTensor), so that rounding ties land on the same side:
# the weights of a model shipped as a GGUF sit on a grid where ties are common.


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def fp8_e4m3(x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
    """Per-tensor (or broadcast `amax`) FP8 E4M3 quantize-dequantize: x * (448/amax) -> e4m3 -> / that."""
    amax = (x.abs().amax() if amax is None else amax).to(torch.float32)
    scale = 448.0 / torch.where(amax <= _ZERO_AMAX, torch.ones_like(amax), amax)
    q = (x.to(torch.float32) * scale).clamp(min=-FP8_E4M3_MAX, max=FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return (q.to(torch.float32) * (1 / scale)).to(x.dtype)


def int_symmetric(x: torch.Tensor, bits: int, amax: torch.Tensor) -> torch.Tensor:
    """Symmetric integer quantize-dequantize, codes in [-2^(b-1), 2^(b-1) - 1], scale (2^(b-1) - 1) / amax.

    A zero amax quantizes its values to zero.
    """
    amax = amax.to(torch.float32)
    bound = 2.0 ** (bits - 1) - 1
    zero = amax <= _ZERO_AMAX
    # tensor / tensor, as ModelOpt divides: `float / tensor` is computed as reciprocal x float,
    # which rounds differently and moves ties.
    scale = torch.where(zero, torch.zeros_like(amax), torch.tensor(bound) / amax)
    codes = torch.clamp((x.to(torch.float32) * scale).round_(), -bound - 1, bound)
    return (codes / torch.where(zero, torch.ones_like(scale), scale)).to(x.dtype)


def int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    return int_symmetric(w, 8, w.abs().amax(dim=1, keepdim=True))


def int4_blockwise(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = w.shape
    blocks = w.reshape(out_features, in_features // group_size, group_size)
    q = int_symmetric(blocks, 4, blocks.abs().amax(dim=-1, keepdim=True))
    return q.reshape(out_features, in_features)


def fp8_blockwise_2d(w: torch.Tensor, block: int = 128) -> torch.Tensor:
    """FP8 E4M3 with one scale per block x block tile of a [out, in] weight (`in` a multiple of `block`).

    A partial tile at the end of the out dimension keeps its own scale, as ModelOpt pads it with zeros.
    """
    out_features, in_features = w.shape
    pad = -out_features % block
    padded = torch.nn.functional.pad(w, (0, 0, 0, pad)) if pad else w
    tiles = padded.reshape(padded.shape[0] // block, block, in_features // block, block)
    amax = tiles.abs().amax(dim=(1, 3), keepdim=True)
    return fp8_e4m3(tiles, amax=amax).reshape(padded.shape)[:out_features]


def fp8_groupwise(x: torch.Tensor, group: int = 128) -> torch.Tensor:
    """FP8 E4M3 with one scale per `group` consecutive elements of each row (1 x group activation groups)."""
    rows, width = x.reshape(-1, x.shape[-1]).shape
    groups = x.reshape(rows, width // group, group)
    return fp8_e4m3(groups, amax=groups.abs().amax(dim=-1, keepdim=True)).reshape(x.shape)


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """Index into E2M1_GRID of |x| rounded to nearest, ties to even, saturating at 6."""
    magnitude = x.abs().to(torch.float32)
    index = torch.searchsorted(_E2M1_BOUNDS, magnitude)
    return index + (magnitude.unsqueeze(-1) == _E2M1_ROUND_UP_TIES).any(dim=-1).to(index.dtype)


def round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * E2M1_GRID.to(x.dtype)[e2m1_codes(x)]


def nvfp4_scales(
    w: torch.Tensor, block_size: int = 16, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E4M3 block scales [rows, in/block], FP32 global scale) of a 2-D tensor: global = amax(W) / (6 * 448)
    unless given (an activation's calibrated scale), block = amax_b / (6 * global) clamped to E4M3's
    [2^-9, 448] (an all-zero block gets 1)."""
    rows, in_features = w.shape
    blocks = w.reshape(rows, in_features // block_size, block_size)
    if global_scale is None:
        global_scale = w.abs().amax() / (E2M1_MAX * FP8_E4M3_MAX)
    global_scale = global_scale.to(torch.float32)
    block_scale = blocks.abs().amax(dim=-1).to(torch.float32) / (E2M1_MAX * _safe(global_scale))
    block_scale[block_scale == 0] = 1.0
    return block_scale.clamp(min=2**-9, max=FP8_E4M3_MAX).to(torch.float8_e4m3fn), global_scale


def nvfp4(x: torch.Tensor, block_size: int = 16, global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """NVFP4: E2M1 elements, one E4M3 scale per `block_size` elements of the last dimension, one FP32
    global scale (from x's own amax, or given)."""
    flat = x.reshape(-1, x.shape[-1])
    rows, in_features = flat.shape
    blocks = flat.reshape(rows, in_features // block_size, block_size).to(torch.float32)
    block_scale, global_scale = nvfp4_scales(flat, block_size, global_scale)
    scale = (block_scale.to(torch.float32) * _safe(global_scale)).unsqueeze(-1)
    q = round_to_e2m1(blocks / scale) * scale
    return q.reshape(x.shape).to(x.dtype)


# --- ModelOpt's export packings, read back (modelopt/torch/export/quant_utils.py) ---


def unpack_int4(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """uint8 [out/2, in] -> int8 codes [out, in] in [-8, 7] (quant_utils.pack_int4_in_uint8, 2-D case)."""
    low = (packed & 0x0F).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    codes = torch.stack((low, high), dim=1).reshape(out_features, packed.shape[1])
    return torch.where(codes >= 8, codes - 16, codes)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out, in/2] -> float32 E2M1 values [out, in] (NVFP4QTensor.quantize/dequantize; bit 3 = sign)."""
    table = torch.cat((E2M1_GRID, -E2M1_GRID))
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(packed.shape[0], packed.shape[1] * 2)
    return table[codes.long()]
