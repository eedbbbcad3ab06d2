"""What the profiling backends and a format's kernel choice share: the CUDA kernels trtq can time,
what the importable TensorRT-LLM offers, and the choice a format makes for one GEMM case.

No torch here: a format's `cuda_kernel` is a pure function of the case, the compute capability and
TensorRT-LLM's ops, so the gating is tested without a GPU. trtq.profile.cuda builds and times the
kernel a choice names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# torch._int_mm on CUDA refuses M <= 16 ("self.size(0) needs to be greater than 16");
# smaller token counts are padded to this many rows, and the row says so.
INT_MM_MIN_ROWS = 17
# aten._weight_int4pack_mm (CUDA) takes these quantization group sizes.
TINYGEMM_GROUP_SIZES = (32, 64, 128, 256)

TORCH_MATMUL = "torch.matmul"
TORCH_SCALED_MM = "torch._scaled_mm"
TORCH_INT_MM = "torch._int_mm"
TORCH_INT4PACK = "aten._weight_int4pack_mm"
TRTLLM_MIXED = "trtllm.finegrained_mixed_dtype_gemm"
TRTLLM_NVFP4 = "trtllm.nvfp4_gemm"


@dataclass(frozen=True)
class TrtllmInfo:
    """What the importable TensorRT-LLM offers this backend (None when it does not import)."""

    version: str
    ops: frozenset[str]  # torch.ops.trtllm op names present
    mixed_gemm_max_sm: int | None  # FinegrainedMixedDtypeGemm.MAX_SUPPORTED_SM_VERSION
    w4a8_max_sm: int | None  # ...MAX_SUPPORTED_SM_VERSION_W4A8 where it exists


@dataclass(frozen=True)
class KernelChoice:
    kernel: str | None  # None: unsupported
    method: str  # what the row's `method` says
    reason: str | None = None
    details: dict = field(default_factory=dict)


def unsupported(reason: str) -> KernelChoice:
    return KernelChoice(None, "none", reason)


def needs_trtllm(fmt: str, trtllm_reason: str | None) -> KernelChoice:
    why = trtllm_reason or "tensorrt_llm is not importable here"
    return unsupported(f"{fmt} runs only on TensorRT-LLM kernels and {why} (use the NGC TensorRT-LLM container)")


def inner_k_tiles(k: int) -> int:
    """The largest tile count aten._convert_weight_to_int4pack accepts for this K (k % (tiles*16) == 0)."""
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"in_features {k} is not a multiple of 32")
