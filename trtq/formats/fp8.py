"""fp8: FP8 E4M3 weights and activations with per-tensor scales (ModelOpt FP8_DEFAULT_CFG, sm89+)."""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format


@dataclass(frozen=True)
class Fp8(Format):
    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import fp8_e4m3

        return fp8_e4m3(w)

    def quantize_activations(self, x, smooth):
        from trtq.formats.numerics import fp8_e4m3

        return fp8_e4m3(x)

    def cpu_kernel(self, torch, x, w, gen):
        from trtq.profile.harness import Prepared

        x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.tensor(1.0)
        return Prepared(
            lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
            "torch._scaled_mm fp8 e4m3 per-tensor",
        )

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import TORCH_SCALED_MM, KernelChoice, unsupported

        n, k = case.out_features, case.in_features
        if k % 16 or n % 16:
            return unsupported(f"torch._scaled_mm needs in and out features divisible by 16, got {n}x{k}")
        return KernelChoice(TORCH_SCALED_MM, "torch._scaled_mm fp8 e4m3 per-tensor scales")

    # ModelOpt: `weight` float8_e4m3fn = W / weight_scale, `weight_scale` = amax / 448 (0-dim), `input_scale` =
    # activation amax / 448. The division is bf16 / 0-dim float32, which PyTorch computes in bf16: a few percent
    # of the weights land one E4M3 step from where ModelOpt's fake quantizer (float32 arithmetic) puts them.
    def checkpoint_tensors(self, out_features, in_features, group_size):
        return {"weight": ((out_features, in_features), ("float8_e4m3fn",)), "weight_scale": ((), ("float32",))}

    def dequantize_checkpoint(self, tensors, out_features, in_features, group_size, dtype):
        import torch

        return (tensors["weight"].to(torch.float32) * tensors["weight_scale"].to(torch.float32)).to(dtype)

    def quantize_checkpoint_input(self, x, input_scale):
        from trtq.formats.numerics import FP8_E4M3_MAX, fp8_e4m3

        return fp8_e4m3(x, input_scale * FP8_E4M3_MAX)


FORMAT = Fp8(
    name="fp8",
    description="FP8 E4M3 weights and activations, per-tensor scales",
    weight_dtype="fp8_e4m3",
    act_dtype="fp8_e4m3",
    weight_bits=8,
    act_bits=8,
    compute="fp8",
    block_sizes=(),
    scale_bytes=0,
    per_channel_scales=False,
    tensor_scale_bytes=4,
    input_scale_vector=False,
    modelopt_config="FP8_DEFAULT_CFG",
    min_sm=89,
    modelopt_on_cpu=True,
    color="#0072B2",
    checkpoint_algos=("FP8",),
    enables_fp8_attention=True,
    checkpoint_required=("weight_scale", "input_scale"),
    # Per-tensor FP8 (TensorRT-LLM's torch flow), activation quantize included.
    aiconfigurator_dtype="fp8",
    activation_quant="fp8_static",
    fused_producers=frozenset({"norm", "act", "attention"}),
)
