"""int4_awq: INT4 weights in groups of 128 (64 where 128 does not divide), BF16 activations (W4A16, INT4_AWQ_CFG)."""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format


@dataclass(frozen=True)
class Int4Awq(Format):
    """INT4 group-wise AWQ weights; w4a8_awq extends it with FP8 activations."""

    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import int4_blockwise

        return int4_blockwise(w, group_size)

    def quantize_activations(self, x, smooth):
        import torch

        return x.to(torch.bfloat16).to(x.dtype)

    def cpu_kernel(self, torch, x, w, gen):
        from trtq.profile.harness import Prepared

        n, k = w.shape
        group = self.group_size_for(k)
        if k % 64 or n % 8:
            return Prepared(None, "none", f"torch's CPU int4 kernel needs in % 64 == 0 and out % 8 == 0, got {n}x{k}")
        w4 = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w4, 2)
        scales_zeros = torch.rand(k // group, n, 2, generator=gen).to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        return Prepared(
            lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, group, scales_zeros),
            f"aten._weight_int4pack_mm_for_cpu group {group}",
            details={"group_size": group},
        )

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import TINYGEMM_GROUP_SIZES, TORCH_INT4PACK, KernelChoice, inner_k_tiles, unsupported

        n, k = case.out_features, case.in_features
        group = self.group_size_for(k)
        if n % 8:
            return self.packing_refusal(n)
        mixed_ok = trtllm is not None and "finegrained_mixed_dtype_gemm" in trtllm.ops
        if mixed_ok and (trtllm.mixed_gemm_max_sm is None or sm <= trtllm.mixed_gemm_max_sm):
            return self.trtllm_mixed_gemm("W4A16", group, trtllm)
        if k % 32 or n % 8:
            return unsupported(f"torch's int4 kernel needs in % 32 == 0 and out % 8 == 0, got {n}x{k}")
        if group not in TINYGEMM_GROUP_SIZES:
            return unsupported(f"torch's int4 kernel takes groups {TINYGEMM_GROUP_SIZES}, not {group}")
        details = {"group_size": group, "inner_k_tiles": inner_k_tiles(k)}
        if trtllm is None:
            details["fallback"] = trtllm_reason or "tensorrt_llm is not importable here"
        else:
            details["fallback"] = f"TensorRT-LLM {trtllm.version} has no W4A16 mixed GEMM for sm{sm}"
        return KernelChoice(TORCH_INT4PACK, f"aten._weight_int4pack_mm group {group} (torch tinygemm)", details=details)

    # The CUDA kernels both AWQ formats share (w4a8_awq extends this class).
    @staticmethod
    def packing_refusal(out_features: int):
        from trtq.formats.kernels import unsupported

        return unsupported(
            f"int4 weights pack 8 per int32 along the output: out features {out_features} not divisible by 8"
        )

    @staticmethod
    def trtllm_mixed_gemm(kind: str, group: int, trtllm):
        from trtq.formats.kernels import TRTLLM_MIXED, KernelChoice

        return KernelChoice(
            TRTLLM_MIXED,
            f"trtllm finegrained_mixed_dtype_gemm {kind} group {group}",
            details={"group_size": group, "tensorrt_llm": trtllm.version},
        )

    # ModelOpt: `weight` uint8 [out/2, in]: two INT4 codes per byte along the OUTPUT dimension (row 2j in the
    # low nibble, row 2j+1 in the high one), `weight_scale` [out, in/group] = block amax / 7, codes
    # round(W / scale) clamped to [-8, 7].
    def checkpoint_shape_refusal(self, out_features):
        return f"INT4 packing needs an even output width, got {out_features}" if out_features % 2 else None

    def checkpoint_tensors(self, out_features, in_features, group_size):
        return {
            "weight": ((out_features // 2, in_features), ("uint8",)),
            "weight_scale": ((out_features, in_features // group_size), ("float32",)),
        }

    def dequantize_checkpoint(self, tensors, out_features, in_features, group_size, dtype):
        import torch

        from trtq.formats.numerics import unpack_int4

        codes = unpack_int4(tensors["weight"], out_features).to(torch.float32)
        scale = tensors["weight_scale"].to(torch.float32)
        return (codes * scale.repeat_interleave(group_size, dim=1)).to(dtype)


FORMAT = Int4Awq(
    name="int4_awq",
    description="INT4 weights in groups (AWQ), BF16 activations (W4A16)",
    weight_dtype="int4",
    act_dtype="bf16",
    weight_bits=4,
    act_bits=16,
    compute="bf16",
    block_sizes=(128, 64),
    scale_bytes=2,
    per_channel_scales=False,
    tensor_scale_bytes=0,
    input_scale_vector=True,
    modelopt_config="INT4_AWQ_CFG",
    min_sm=80,
    modelopt_on_cpu=True,
    color="#E69F00",
    checkpoint_algos=("W4A16_AWQ",),
    runtime_group_sizes=(64, 128),
    folds_pre_quant_scale=True,
    checkpoint_required=("weight_scale",),
    checkpoint_optional=("pre_quant_scale",),
    aiconfigurator_refusal="the tables' int4_wo is TensorRT-LLM's per-channel weight-only plugin, not group-wise AWQ",
)
