"""A format that exists only in the tests: INT6 weights with per-output-channel scales, BF16 activations.

It is what a newcomer writes in trtq/formats/<name>.py, and nothing else: registry facts in the
constructor, the reference quantizer for sensitivity, a CPU kernel for the harness. It has no ModelOpt
recipe, so it says why trtq cannot export it (planned only when named).
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.formats.base import Format


@dataclass(frozen=True)
class ToyInt6(Format):
    def quantize_weight(self, w, group_size):
        from trtq.formats.numerics import int_symmetric

        return int_symmetric(w, 6, w.abs().amax(dim=1, keepdim=True))

    def quantize_activations(self, x, smooth):
        import torch

        return x.to(torch.bfloat16).to(x.dtype)


TOY = ToyInt6(
    name="toy_int6",
    description="INT6 per-channel weights, BF16 activations (a test-only format)",
    weight_dtype="int6", act_dtype="bf16", weight_bits=6, act_bits=16,
    compute="bf16", block_sizes=(), scale_bytes=2, per_channel_scales=True, tensor_scale_bytes=0,
    input_scale_vector=False, modelopt_config=None, min_sm=80, modelopt_on_cpu=False,
    export_refusal="toy_int6 is a test-only format with no ModelOpt recipe",
    color="#123456",
)
