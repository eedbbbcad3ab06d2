"""The Format base class: a format's registry facts (fields) and what each stage asks it (methods).

A format module subclasses `Format`, overrides the methods its stages need and creates one
instance, `FORMAT`. A method a format does not override answers "not built" in the stage's own
words (an unsupported profile row, a refused checkpoint), never a guess. Methods that need torch
or ModelOpt import them inside, so the registry itself stays torch-free.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: importing these at run time would pull torch into `trtq plan`
    import torch

    from trtq.formats.kernels import KernelChoice, TrtllmInfo
    from trtq.profile.harness import GemmCase, Prepared


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

    # ---- report: one colour per format on every page
    color: str = "#7f7f7f"
    # ---- checkpoints: TensorRT-LLM QuantAlgo names a checkpoint layer in this format carries; the first is
    # the one ModelOpt writes (and the one eval rebuilds), the others come from TensorRT-LLM's own converters.
    checkpoint_algos: tuple[str, ...] = ()
    # Group sizes TensorRT-LLM's kernels take for this format's checkpoints; () = not checked.
    runtime_group_sizes: tuple[int, ...] = ()
    # Attention layers in this format can use TensorRT-LLM's FP8 context FMHA (FP8 or finer activations).
    enables_fp8_attention: bool = False
    # Legacy engines (trtllm-build): this format's GEMMs run only through the GEMM plugin.
    needs_gemm_plugin: bool = False
    # SmoothQuant: input-channel ranges migrate into the weights before either is quantized.
    smooths_activations: bool = False
    # AWQ: ModelOpt folds the pre_quant_scale into the preceding norm on export (and may drop it).
    folds_pre_quant_scale: bool = False
    # eval --checkpoint: the tensors a layer must and may carry beside its weight (and bias).
    checkpoint_required: tuple[str, ...] = ()
    checkpoint_optional: tuple[str, ...] = ()
    # ---- aiconfigurator-core: the GEMM table's `gemm_dtype` (GEMMQuantMode name); None: no table holds it
    # and `aiconfigurator_refusal` says why (its rows are modelled).
    aiconfigurator_dtype: str | None = None
    aiconfigurator_refusal: str | None = None
    # ---- predict: how the activation is quantized when no producer fuses it (None: stays bf16), and the
    # producer kinds (norm, act, attention) that emit it with the quantization fused in.
    activation_quant: str | None = None
    fused_producers: frozenset[str] = field(default_factory=frozenset)

    # ---- registry facts ---------------------------------------------------------------------------------

    @property
    def quantized(self) -> bool:
        """False for the unquantized format (bf16 weights and activations): nothing for ModelOpt to apply."""
        return not (self.weight_dtype == "bf16" and self.act_dtype == "bf16")

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

    # ---- sensitivity: reference quantize-dequantize of the kernel's operands, on CPU ----------------

    def quantize_weight(self, w: torch.Tensor, group_size: int | None) -> torch.Tensor:
        """Q_f(W) in float arithmetic; `group_size` is set for a blocked format. Called by
        trtq.sensitivity.quantizers.quantize_dequantize, which detaches and picks the group size."""
        raise ValueError(f"no reference quantizer for format {self.name}")

    def quantize_activations(self, x: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
        """Q_a(X') as this format's kernel multiplies it; x is [tokens, in], `smooth` the SmoothQuant scales."""
        raise ValueError(f"no reference activation quantizer for {self.name} ({self.act_dtype})")

    # ---- profile: the kernels that time a GEMM in this format --------------------------------------

    def cpu_kernel(self, torch: Any, x: torch.Tensor, w: torch.Tensor, gen: torch.Generator) -> Prepared:
        """The cpu backend's run for x [m, k] @ w [n, k]^T (trtq.profile.cpu), or why none."""
        from trtq.profile.harness import Prepared

        return Prepared(None, "none", f"torch has no CPU kernel for {self.name}")

    def cuda_kernel(
        self, case: GemmCase, sm: int, trtllm: TrtllmInfo | None, trtllm_reason: str | None
    ) -> KernelChoice:
        """The CUDA kernel that measures `case` (shape and GPU already checked: sm >= min_sm, blocks
        divide), or why none. Kernel names are trtq.formats.kernels' constants."""
        from trtq.formats.kernels import unsupported

        return unsupported(f"no CUDA kernel for {self.name} in this backend")

    # ---- quantize: ModelOpt's preset -----------------------------------------------------------------

    def modelopt_preset(self) -> dict[str, Any]:
        """A deep copy of the format's ModelOpt preset (never the module-level dict itself)."""
        from trtq.errors import InputError

        if self.modelopt_config is None:
            raise InputError(f"format {self.name} has no ModelOpt config")
        import modelopt.torch.quantization as mtq

        preset = getattr(mtq, self.modelopt_config, None)
        if not isinstance(preset, dict):
            raise InputError(f"this ModelOpt has no preset {self.modelopt_config} for format {self.name}")
        return copy.deepcopy(preset)

    # ---- eval --checkpoint: rebuilding the weight and input quantization from exported tensors ---------

    @property
    def checkpoint_algo(self) -> str | None:
        """The QuantAlgo ModelOpt writes for this format (None: none)."""
        return self.checkpoint_algos[0] if self.checkpoint_algos else None

    @property
    def rebuilds_checkpoint(self) -> bool:
        """Whether `trtq eval --checkpoint` can rebuild a layer of this format from its tensors."""
        return bool(self.checkpoint_required)

    def checkpoint_group_refusal(self, group_size: int) -> str | None:
        """Why eval cannot rebuild this format at that group size (None: it can)."""
        return None

    def checkpoint_shape_refusal(self, out_features: int) -> str | None:
        """Why a layer of that output width cannot be this format's packing (None: it can)."""
        return None

    def checkpoint_tensors(
        self, out_features: int, in_features: int, group_size: int | None
    ) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
        """name -> (shape, allowed dtypes) of the `weight` and `weight_scale` a layer carries."""
        return {}

    def dequantize_checkpoint(
        self,
        tensors: dict[str, torch.Tensor],
        out_features: int,
        in_features: int,
        group_size: int | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The weight the kernel multiplies by, in `dtype`, from the exported tensors."""
        from trtq.errors import UnsupportedError

        raise UnsupportedError(f"quant_algo {self.checkpoint_algo!r} is not one trtq eval can reproduce")

    def quantize_checkpoint_input(self, x: torch.Tensor, input_scale: torch.Tensor | None) -> torch.Tensor:
        """The GEMM's input quantized with the exported static `input_scale` (activations kept: x)."""
        return x
