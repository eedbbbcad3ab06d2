"""fp8_block: TensorRT-LLM's FP8_BLOCK_SCALES (DeepSeek-style), FP8 E4M3 weights in 128x128 tiles and
activations in 1x128 groups, one FP32 scale per tile (4/128 bytes per row and 128 inputs) and per group,
the activations quantized by the kernel at run time. Hopper and Blackwell (sm90+).
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format


@dataclass(frozen=True)
class Fp8Block(Format):
    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import fp8_blockwise_2d

        return fp8_blockwise_2d(w, group_size)

    def quantize_activations(self, x, smooth):
        from trtq.formats.numerics import fp8_groupwise

        return fp8_groupwise(x, self.act_block_size)


FORMAT = Fp8Block(
    name="fp8_block",
    description="FP8 E4M3 weights in 128x128 blocks, FP8 E4M3 activations in 1x128 groups (block scaling)",
    weight_dtype="fp8_e4m3",
    act_dtype="fp8_e4m3",
    weight_bits=8,
    act_bits=8,
    compute="fp8",
    block_sizes=(128,),
    scale_bytes=4 / 128,
    per_channel_scales=False,
    tensor_scale_bytes=0,
    input_scale_vector=False,
    modelopt_config="FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
    min_sm=90,
    modelopt_on_cpu=True,
    act_block_size=128,
    export_refusal=(
        "ModelOpt 0.47 has no W8A8 block-FP8 recipe: its FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG quantizes 128x128 "
        "weight tiles but cannot fake-quantize 1x128 FP8 activation groups (its dynamic block quantizer needs a "
        "low-bit scale format), and it exports the layers as quant_algo 'fp8_pb_wo', which TensorRT-LLM maps "
        "to FP8_BLOCK_SCALES only checkpoint-wide (main branch), not per layer in a MIXED_PRECISION checkpoint"
    ),
    color="#D55E00",
    # ModelOpt 0.47 does not write FP8_BLOCK_SCALES (see export_refusal); other producers do.
    checkpoint_algos=("FP8_BLOCK_SCALES",),
    enables_fp8_attention=True,
    # 128x128 weight blocks, 1x128 activation groups (DeepGEMM / torch flow).
    aiconfigurator_dtype="fp8_block",
    activation_quant="fp8_dynamic",
)
