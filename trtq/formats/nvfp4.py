"""nvfp4: E2M1 values in 16-element blocks with E4M3 block scales and an FP32 global scale (Blackwell, sm100+).

ModelOpt's NVFP4 fake quantization needs CUDA, so the reference quantizer implements the format by its
definition (trtq.formats.numerics.nvfp4); profiling needs TensorRT-LLM's nvfp4_gemm.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format

NVFP4_BLOCK = 16


@dataclass(frozen=True)
class Nvfp4(Format):
    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import nvfp4

        return nvfp4(w, group_size)

    def quantize_activations(self, x, smooth):
        from trtq.formats.numerics import nvfp4

        return nvfp4(x, self.group_size_for(x.shape[1]))

    def cuda_kernel(self, case, sm, trtllm, trtllm_reason):
        from trtq.formats.kernels import TRTLLM_NVFP4, KernelChoice, needs_trtllm, unsupported

        if trtllm is None:
            return needs_trtllm(self.name, trtllm_reason)
        if not {"nvfp4_gemm", "fp4_quantize"} <= trtllm.ops:
            return unsupported(f"TensorRT-LLM {trtllm.version} has no trtllm.nvfp4_gemm / fp4_quantize op")
        return KernelChoice(
            TRTLLM_NVFP4,
            "trtllm nvfp4_gemm (block 16)",
            details={"group_size": self.group_size_for(case.in_features), "tensorrt_llm": trtllm.version},
        )

    # ModelOpt: `weight` uint8 [out, in/2]: two E2M1 codes per byte along the INPUT dimension (element 2i in the
    # low nibble), `weight_scale` float8_e4m3fn [out, in/16], `weight_scale_2` = amax / (6 * 448),
    # `input_scale` = activation amax / (6 * 448); activations are quantized per 16-element block at run time.
    def checkpoint_group_refusal(self, group_size):
        if group_size != NVFP4_BLOCK:
            return f"NVFP4 with group_size {group_size} (trtq reads block {NVFP4_BLOCK})"
        return None

    def checkpoint_tensors(self, out_features, in_features, group_size):
        return {
            "weight": ((out_features, in_features // 2), ("uint8",)),
            "weight_scale": ((out_features, in_features // group_size), ("float8_e4m3fn",)),
        }

    def dequantize_checkpoint(self, tensors, out_features, in_features, group_size, dtype):
        import torch

        from trtq.formats.numerics import unpack_e2m1

        scale = tensors["weight_scale"].to(torch.float32)
        values = unpack_e2m1(tensors["weight"]).reshape(out_features, in_features // group_size, group_size)
        block = scale.reshape(out_features, in_features // group_size, 1) * tensors["weight_scale_2"].to(torch.float32)
        return (values * block).reshape(out_features, in_features).to(dtype)

    def quantize_checkpoint_input(self, x, input_scale):
        from trtq.formats.numerics import nvfp4

        return nvfp4(x, NVFP4_BLOCK, global_scale=input_scale)


FORMAT = Nvfp4(
    name="nvfp4",
    description="NVFP4: E2M1 values in 16-element blocks with E4M3 block scales, FP32 global scale",
    weight_dtype="e2m1",
    act_dtype="e2m1",
    weight_bits=4,
    act_bits=4,
    compute="fp4",
    block_sizes=(NVFP4_BLOCK,),
    scale_bytes=1,
    per_channel_scales=False,
    tensor_scale_bytes=4,
    input_scale_vector=False,
    modelopt_config="NVFP4_DEFAULT_CFG",
    min_sm=100,
    modelopt_on_cpu=False,
    color="#009E73",
    checkpoint_algos=("NVFP4",),
    runtime_group_sizes=(NVFP4_BLOCK,),
    enables_fp8_attention=True,
    needs_gemm_plugin=True,
    checkpoint_required=("weight_scale", "weight_scale_2", "input_scale"),
    aiconfigurator_dtype="nvfp4",
    activation_quant="nvfp4",
    fused_producers=frozenset({"norm", "act"}),
)
