"""A dense decoder's blocks from its Hugging Face config, in pure Python (no torch).

The step model needs only the block structure: four fused GEMM groups per block
(`model.layers.3.self_attn.qkv`, `.self_attn.o_proj`, `.mlp.gate_up`, `.mlp.down_proj`).
It reads them from the family's adapter (trtq.model.families), the same one both layer
graphs use, so a plan's group names map 1:1. An MoE block's experts are one group (`model.layers.3.mlp.experts`,
kind `moe`): per expert a gate_up and a down GEMM, `experts_per_token` of `experts` chosen per token by the
router (which stays bf16); a shared expert is a dense gate_up / down pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trtq.errors import InputError, UnsupportedError
from trtq.model.families import ADAPTERS, adapter_for, block_layout, generic_adapter, read_dims

MODEL_TYPES = tuple(ADAPTERS)

# Group kind -> the op that produces its input inside a block (for the transition term). The MoE
# kernel quantizes its own intermediate: its input is the post-attention norm's output.
PRODUCER_OF = {"qkv": "norm", "o_proj": "attention", "gate_up": "norm", "down_proj": "act", "moe": "norm"}


@dataclass(frozen=True)
class GemmGroup:
    name: str  # plan group name
    kind: str  # qkv | o_proj | gate_up | down_proj
    block: int
    out_features: int  # N (full model, before tensor parallelism); MoE: hidden
    in_features: int  # K; MoE: hidden
    experts: int | None = None  # MoE: routed experts
    experts_per_token: int | None = None  # MoE: top-k
    expert_intermediate: int | None = None  # MoE: one expert's intermediate width

    def sharded(self, tp: int) -> tuple[int, int]:
        """(N, K) on one GPU: column-parallel (qkv, gate_up) split N, row-parallel split K."""
        if self.kind in ("qkv", "gate_up"):
            return self.out_features // tp, self.in_features
        return self.out_features, self.in_features // tp

    def expert_gemms(self, tp: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """One expert's (N, K) of gate_up and down on one GPU: TensorRT-LLM's MoE TP splits the intermediate."""
        h, i = self.in_features, self.expert_intermediate // tp
        return (2 * i, h), (h, i)


@dataclass(frozen=True)
class DecoderArchitecture:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    groups: tuple[GemmGroup, ...]

    def kv_heads_per_gpu(self, tp: int) -> int:
        return -(-self.num_kv_heads // tp)

    def kv_elements_per_token(self, tp: int) -> int:
        """K and V elements per token per GPU, all layers."""
        return 2 * self.kv_heads_per_gpu(tp) * self.head_dim * self.num_layers

    def check_tp(self, tp: int) -> None:
        if tp < 1:
            raise InputError(f"--tp must be >= 1, got {tp}")
        for what, value in (("attention heads", self.num_heads), ("intermediate size", self.intermediate_size)):
            if value % tp:
                raise InputError(f"{self.name}: {what} ({value}) do not divide by --tp {tp}")


def decoder_architecture(name: str, config: dict[str, Any]) -> DecoderArchitecture:
    """The block view of the family's adapter (trtq.model.families): the same fused groups, the same names."""
    adapter = adapter_for(config) or generic_adapter(config)
    if adapter is None:
        raise UnsupportedError(
            f"{name}: the step model covers the families with an adapter ({', '.join(MODEL_TYPES)}); "
            f"model_type {config.get('model_type')!r} is not built yet"
        )
    dims = read_dims(adapter, config, name)
    groups: dict[str, GemmGroup] = {}
    for b in range(dims.blocks):
        block = block_layout(adapter, dims, b)
        for linear in block.linears:
            key = f"{adapter.block_path}.{b}.{linear.group_suffix}"
            if linear.experts is not None:
                groups[key] = GemmGroup(
                    key,
                    linear.group_kind,
                    b,
                    dims.hidden,
                    dims.hidden,
                    experts=linear.experts,
                    experts_per_token=block.experts_per_token,
                    expert_intermediate=dims.moe_intermediate,
                )
                continue
            g = groups.get(key)
            groups[key] = GemmGroup(
                key, linear.group_kind, b, (g.out_features if g else 0) + linear.out_features, linear.in_features
            )
    return DecoderArchitecture(
        name=name,
        num_layers=dims.blocks,
        hidden_size=dims.hidden,
        num_heads=dims.heads,
        num_kv_heads=dims.kv_heads,
        head_dim=dims.head_dim,
        intermediate_size=dims.intermediate,
        vocab_size=dims.vocab,
        tie_word_embeddings=dims.tied,
        groups=tuple(groups.values()),
    )
