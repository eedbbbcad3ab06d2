"""bf16: BF16 weights and activations, no quantization (the baseline every plan starts from)."""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format


@dataclass(frozen=True)
class Bf16(Format):
    def quantize_weight(self, w, group_size):
        import torch

        return w.to(torch.bfloat16).to(w.dtype)

    def quantize_activations(self, x, smooth):
        import torch

        return x.to(torch.bfloat16).to(x.dtype)

    def cpu_kernel(self, torch, x, w, gen):
        from trtq.profile.harness import Prepared

        xb, wt = x.to(torch.bfloat16), w.to(torch.bfloat16).t().contiguous()
        return Prepared(lambda: torch.matmul(xb, wt), "torch.matmul bf16")

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import TORCH_MATMUL, KernelChoice

        return KernelChoice(TORCH_MATMUL, "torch.matmul bf16 (cuBLAS)")


FORMAT = Bf16(
    name="bf16",
    description="BF16 weights and activations (no quantization)",
    weight_dtype="bf16",
    act_dtype="bf16",
    weight_bits=16,
    act_bits=16,
    compute="bf16",
    block_sizes=(),
    scale_bytes=0,
    per_channel_scales=False,
    tensor_scale_bytes=0,
    input_scale_vector=False,
    modelopt_config=None,
    min_sm=80,
    modelopt_on_cpu=True,
    color="#9a9a9a",
    aiconfigurator_dtype="bfloat16",
)
