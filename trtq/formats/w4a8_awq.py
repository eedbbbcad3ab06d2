"""w4a8_awq: INT4 weights in groups (AWQ) with FP8 activations (W4A8_AWQ_BETA_CFG, sm89+, TensorRT-LLM kernels)."""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format
from trtq.formats.int4_awq import Int4Awq


@dataclass(frozen=True)
class W4a8Awq(Int4Awq):
    def quantize_weight(self, w, group_size):
        # ModelOpt's W4A8 weight quantizer is INT4 blocks followed by a per-tensor FP8 stage.
        # Calibration collects every stage's amax with quantization off, so the FP8 stage's
        # amax is that of W itself, not of the INT4 result (they differ in the last bits).
        from trtq.formats.numerics import fp8_e4m3

        return fp8_e4m3(super().quantize_weight(w, group_size), amax=w.abs().amax())

    def quantize_activations(self, x, smooth):
        from trtq.formats.numerics import fp8_e4m3

        return fp8_e4m3(x)

    # torch has no CPU W4A8 kernel.
    cpu_kernel = Format.cpu_kernel

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import needs_trtllm, unsupported

        n, k = case.out_features, case.in_features
        group = self.group_size_for(k)
        if n % 8:
            return self.packing_refusal(n)
        if trtllm is None:
            return needs_trtllm(self.name, trtllm_reason)
        mixed_ok = "finegrained_mixed_dtype_gemm" in trtllm.ops
        limit = trtllm.w4a8_max_sm if trtllm.w4a8_max_sm is not None else trtllm.mixed_gemm_max_sm
        if not mixed_ok or (limit is not None and sm > limit):
            return unsupported(f"TensorRT-LLM {trtllm.version} has no W4A8 GEMM for sm{sm}")
        return self.trtllm_mixed_gemm("W4A8", group, trtllm)

    # ModelOpt: as W4A16_AWQ, plus `weight_scale_2` = amax / 448 of the FP8 stage it applies to the
    # INT4-dequantized weight, and `input_scale` = FP8 activation amax / 448.
    def dequantize_checkpoint(self, tensors, out_features, in_features, group_size, dtype):
        import torch

        from trtq.formats.numerics import FP8_E4M3_MAX, fp8_e4m3

        dequantized = super().dequantize_checkpoint(tensors, out_features, in_features, group_size, dtype)
        # The kernel turns the INT4 codes times their group scale into FP8 against weight_scale_2.
        return fp8_e4m3(dequantized, tensors["weight_scale_2"].to(torch.float32) * FP8_E4M3_MAX)

    def quantize_checkpoint_input(self, x, input_scale):
        from trtq.formats.numerics import FP8_E4M3_MAX, fp8_e4m3

        return fp8_e4m3(x, input_scale * FP8_E4M3_MAX)


FORMAT = W4a8Awq(
    name="w4a8_awq",
    description="INT4 weights in groups (AWQ), FP8 activations",
    weight_dtype="int4",
    act_dtype="fp8_e4m3",
    weight_bits=4,
    act_bits=8,
    compute="fp8",
    block_sizes=(128, 64),
    scale_bytes=2,
    per_channel_scales=False,
    tensor_scale_bytes=4,
    input_scale_vector=True,
    modelopt_config="W4A8_AWQ_BETA_CFG",
    min_sm=89,
    modelopt_on_cpu=True,
    color="#CC79A7",
    checkpoint_algos=("W4A8_AWQ",),
    runtime_group_sizes=(64, 128),
    enables_fp8_attention=True,
    folds_pre_quant_scale=True,
    checkpoint_required=("weight_scale", "weight_scale_2", "input_scale"),
    checkpoint_optional=("pre_quant_scale",),
    aiconfigurator_refusal="no GEMM table holds W4A8 (only the MoE tables have w4afp8)",
    activation_quant="fp8_static",
    fused_producers=frozenset({"norm", "act", "attention"}),
)
