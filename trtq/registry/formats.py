"""The format registry: the search space, one entry per precision, registered here.

Each format knows its bit widths, the compute rate it runs at, its block/group
sizes along a layer's input width, how many bytes a weight matrix takes in it,
the ModelOpt config it maps to, and the first GPU architecture that runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtq.errors import UnknownNameError


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    weight_dtype: str
    act_dtype: str
    weight_bits: float
    act_bits: float
    # The tensor-core rate a GEMM in this format runs at: a key of GpuSpec.peak_flops.
    compute: str
    # Candidate block/group sizes along in_features, preferred first; () = no blocks.
    block_sizes: tuple[int, ...]
    # Bytes per scale: per block when block_sizes, per output channel when per_channel.
    scale_bytes: float
    per_channel_scales: bool
    # Bytes of per-tensor scales (FP8 scale, NVFP4 global scale).
    tensor_scale_bytes: float
    # Extra per-input-channel vector stored with the weight (AWQ / SmoothQuant scales, bf16).
    input_scale_vector: bool
    modelopt_config: str | None
    min_sm: int
    # ModelOpt's fake quantization runs on CPU (NVFP4's dynamic block quantizer asserts CUDA).
    modelopt_on_cpu: bool
    # Activations quantized in 1 x act_block_size groups along in_features (fp8_block); None: per tensor
    # (or per the format's own blocks, NVFP4).
    act_block_size: int | None = None
    # Why `trtq quantize` cannot apply and export this format with the installed ModelOpt (None: it can).
    # Such a format is planned only when asked for by name (--formats): a default plan must be one trtq can ship.
    export_refusal: str | None = None

    def group_size_for(self, in_features: int) -> int | None:
        """The block size this format uses for a layer of that input width.

        None for formats without blocks. Raises ValueError when no candidate divides
        `in_features` (ModelOpt cannot pack partial blocks): use `available_for` first.
        """
        if not self.block_sizes:
            return None
        for size in self.block_sizes:
            if in_features % size == 0:
                return size
        raise ValueError(self.unavailable_reason(in_features))

    def available_for(self, in_features: int) -> bool:
        return not self.block_sizes or any(in_features % s == 0 for s in self.block_sizes)

    def unavailable_reason(self, in_features: int) -> str:
        """Why a layer of that input width cannot take this format (for rows and errors)."""
        return f"no {self.name} block size in {self.block_sizes} divides input width {in_features}"

    def weight_bytes(self, out_features: int, in_features: int, group_size: int | None = None) -> int:
        """Bytes of one (out, in) weight matrix in this format, scales included."""
        n, k = out_features, in_features
        total = n * k * self.weight_bits / 8
        if self.block_sizes:
            g = group_size if group_size is not None else self.group_size_for(k)
            if g is None:
                raise ValueError(f"{self.name}: no block size divides in_features {k}")
            total += n * math.ceil(k / g) * self.scale_bytes
        elif self.per_channel_scales:
            total += n * self.scale_bytes
        total += self.tensor_scale_bytes
        if self.input_scale_vector:
            total += k * 2
        return int(math.ceil(total))

    def activation_bytes(self, tokens: int, in_features: int) -> float:
        """Bytes of the GEMM's input activations as the kernel reads them."""
        return tokens * in_features * self.act_bits / 8


_FORMATS: tuple[Format, ...] = (
    Format(
        name="bf16",
        description="BF16 weights and activations (no quantization)",
        weight_dtype="bf16", act_dtype="bf16", weight_bits=16, act_bits=16,
        compute="bf16", block_sizes=(), scale_bytes=0, per_channel_scales=False, tensor_scale_bytes=0,
        input_scale_vector=False, modelopt_config=None, min_sm=80, modelopt_on_cpu=True,
    ),
    Format(
        name="fp8",
        description="FP8 E4M3 weights and activations, per-tensor scales",
        weight_dtype="fp8_e4m3", act_dtype="fp8_e4m3", weight_bits=8, act_bits=8,
        compute="fp8", block_sizes=(), scale_bytes=0, per_channel_scales=False, tensor_scale_bytes=4,
        input_scale_vector=False, modelopt_config="FP8_DEFAULT_CFG", min_sm=89, modelopt_on_cpu=True,
    ),
    Format(
        name="int8_sq",
        description="INT8 per-channel weights, INT8 per-tensor activations (SmoothQuant)",
        weight_dtype="int8", act_dtype="int8", weight_bits=8, act_bits=8,
        compute="int8", block_sizes=(), scale_bytes=4, per_channel_scales=True, tensor_scale_bytes=0,
        input_scale_vector=True, modelopt_config="INT8_SMOOTHQUANT_CFG", min_sm=80, modelopt_on_cpu=True,
    ),
    Format(
        name="int4_awq",
        description="INT4 weights in groups (AWQ), BF16 activations (W4A16)",
        weight_dtype="int4", act_dtype="bf16", weight_bits=4, act_bits=16,
        compute="bf16", block_sizes=(128, 64), scale_bytes=2, per_channel_scales=False, tensor_scale_bytes=0,
        input_scale_vector=True, modelopt_config="INT4_AWQ_CFG", min_sm=80, modelopt_on_cpu=True,
    ),
    Format(
        name="w4a8_awq",
        description="INT4 weights in groups (AWQ), FP8 activations",
        weight_dtype="int4", act_dtype="fp8_e4m3", weight_bits=4, act_bits=8,
        compute="fp8", block_sizes=(128, 64), scale_bytes=2, per_channel_scales=False, tensor_scale_bytes=4,
        input_scale_vector=True, modelopt_config="W4A8_AWQ_BETA_CFG", min_sm=89, modelopt_on_cpu=True,
    ),
    Format(
        name="nvfp4",
        description="NVFP4: E2M1 values in 16-element blocks with E4M3 block scales, FP32 global scale",
        weight_dtype="e2m1", act_dtype="e2m1", weight_bits=4, act_bits=4,
        compute="fp4", block_sizes=(16,), scale_bytes=1, per_channel_scales=False, tensor_scale_bytes=4,
        input_scale_vector=False, modelopt_config="NVFP4_DEFAULT_CFG", min_sm=100, modelopt_on_cpu=False,
    ),
    Format(
        # TensorRT-LLM's FP8_BLOCK_SCALES (DeepSeek-style): one FP32 scale per 128x128 weight tile (4/128 bytes
        # per row and 128 inputs) and per 1x128 activation group, quantized by the kernel at run time.
        name="fp8_block",
        description="FP8 E4M3 weights in 128x128 blocks, FP8 E4M3 activations in 1x128 groups (block scaling)",
        weight_dtype="fp8_e4m3", act_dtype="fp8_e4m3", weight_bits=8, act_bits=8,
        compute="fp8", block_sizes=(128,), scale_bytes=4 / 128, per_channel_scales=False, tensor_scale_bytes=0,
        input_scale_vector=False, modelopt_config="FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", min_sm=90,
        modelopt_on_cpu=True, act_block_size=128,
        export_refusal=(
            "ModelOpt 0.47 has no W8A8 block-FP8 recipe: its FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG quantizes 128x128 "
            "weight tiles but cannot fake-quantize 1x128 FP8 activation groups (its dynamic block quantizer needs a "
            "low-bit scale format), and it exports the layers as quant_algo 'fp8_pb_wo', which TensorRT-LLM maps "
            "to FP8_BLOCK_SCALES only checkpoint-wide (main branch), not per layer in a MIXED_PRECISION checkpoint"
        ),
    ),
)

FORMATS: dict[str, Format] = {f.name: f for f in _FORMATS}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name.strip().lower()]
    except KeyError:
        raise UnknownNameError(
            f"unknown format {name!r}; known formats: {', '.join(FORMATS)}"
        ) from None


def parse_formats(spec: str | None) -> list[Format]:
    """'fp8,int4_awq' -> formats (bf16 always first); None -> all formats."""
    if not spec:
        return list(FORMATS.values())
    chosen = [get_format(part) for part in spec.split(",") if part.strip()]
    if FORMATS["bf16"] not in chosen:
        chosen.insert(0, FORMATS["bf16"])
    return chosen
