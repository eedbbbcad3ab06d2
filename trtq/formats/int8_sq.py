"""int8_sq: INT8 per-channel weights, INT8 per-tensor activations after SmoothQuant (INT8_SMOOTHQUANT_CFG).

SmoothQuant migrates each input channel's range into the weights before it quantizes either
(X' = X / s, W' = W * s); trtq.sensitivity.operands applies the migration where `smooths_activations`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format

INT8_MAX = 127.0


@dataclass(frozen=True)
class Int8SmoothQuant(Format):
    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import int8_per_channel

        return int8_per_channel(w)

    def quantize_activations(self, x, smooth):
        from trtq.formats.numerics import int_symmetric

        smoothed = x / smooth
        return int_symmetric(smoothed, 8, smoothed.abs().amax())

    def cpu_kernel(self, torch, x, w, gen):
        from trtq.profile.harness import Prepared

        x8 = x.clamp(-127, 127).to(torch.int8)
        w8t = w.clamp(-127, 127).to(torch.int8).t()
        scale = torch.rand(w.shape[0], generator=gen)
        return Prepared(
            lambda: torch._int_mm(x8, w8t).to(torch.float32).mul_(scale).to(torch.bfloat16),
            "torch._int_mm int8 + per-channel dequant",
        )

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import INT_MM_MIN_ROWS, TORCH_INT_MM, KernelChoice, unsupported

        m, n, k = case.tokens, case.out_features, case.in_features
        if k % 8 or n % 8:
            return unsupported(f"torch._int_mm needs in and out features divisible by 8, got {n}x{k}")
        rows = max(m, INT_MM_MIN_ROWS)
        details = {"kernel_tokens": rows} if rows != m else {}
        return KernelChoice(TORCH_INT_MM, "torch._int_mm int8 + per-channel dequant", details=details)

    # ModelOpt: `weight` int8 = round(W / weight_scale[:, None]), `weight_scale` = amax / 127 per output channel,
    # `input_scale` = amax / 127 per tensor (activations use [-128, 127]: ModelOpt's narrow_range is False),
    # SmoothQuant's `pre_quant_scale` [in] kept.
    def checkpoint_tensors(self, out_features, in_features, group_size):
        return {"weight": ((out_features, in_features), ("int8",)), "weight_scale": ((out_features,), ("float32",))}

    def dequantize_checkpoint(self, tensors, out_features, in_features, group_size, dtype):
        import torch

        scale = tensors["weight_scale"].to(torch.float32)
        return (tensors["weight"].to(torch.float32) * scale.reshape(-1, 1)).to(dtype)

    def quantize_checkpoint_input(self, x, input_scale):
        from trtq.formats.numerics import int_symmetric

        return int_symmetric(x, 8, input_scale * INT8_MAX)


FORMAT = Int8SmoothQuant(
    name="int8_sq",
    description="INT8 per-channel weights, INT8 per-tensor activations (SmoothQuant)",
    weight_dtype="int8",
    act_dtype="int8",
    weight_bits=8,
    act_bits=8,
    compute="int8",
    block_sizes=(),
    scale_bytes=4,
    per_channel_scales=True,
    tensor_scale_bytes=0,
    input_scale_vector=True,
    modelopt_config="INT8_SMOOTHQUANT_CFG",
    min_sm=80,
    modelopt_on_cpu=True,
    color="#56B4E9",
    smooths_activations=True,
    # ModelOpt exports W8A8_SQ_PER_CHANNEL; the *_PLUGIN spellings come from TensorRT-LLM's own converters
    # (all carry INT8 per-channel weights).
    checkpoint_algos=(
        "W8A8_SQ_PER_CHANNEL",
        "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN",
        "W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN",
    ),
    checkpoint_required=("weight_scale", "input_scale"),
    checkpoint_optional=("pre_quant_scale",),
    # SmoothQuant W8A8 (a100_sxm, TensorRT-LLM 1.0 plugin).
    aiconfigurator_dtype="sq",
    activation_quant="int8",
)
