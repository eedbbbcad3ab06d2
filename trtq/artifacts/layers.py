"""The layer graph of a causal LM: quantizable Linear layers and their fused groups."""

from __future__ import annotations

import re
from typing import ClassVar, NamedTuple

from trtq.artifacts.io import Artifact, StrictModel

# Layer kind -> the fused group kind TensorRT-LLM builds from it (inside a decoder block):
# q/k/v become one QKV GEMM and gate/up one GEMM, so they must share one format.
FUSED_KINDS: dict[str, str] = {
    "q_proj": "qkv",
    "k_proj": "qkv",
    "v_proj": "qkv",
    "gate_proj": "gate_up",
    "up_proj": "gate_up",
}
_BLOCK = re.compile(r"\.layers\.(\d+)\.")
# How TensorRT-LLM shards a layer kind over tensor-parallel GPUs: column-parallel layers split their
# outputs (N), row-parallel ones their inputs (K); lm_head splits the vocabulary; MoE experts split
# their intermediate width (gate_up's N, down's K).
TP_SPLIT: dict[str, str] = {
    "q_proj": "out",
    "k_proj": "out",
    "v_proj": "out",
    "gate_proj": "out",
    "up_proj": "out",
    "lm_head": "out",
    "experts_gate_up": "out",
    "o_proj": "in",
    "down_proj": "in",
    "experts_down": "in",
}


def fused_group_name(layer: str) -> str | None:
    """The fused group a layer of this name belongs to (e.g. model.layers.3.self_attn.qkv), or None."""
    parent, _, kind = layer.rpartition(".")
    fused = FUSED_KINDS.get(kind)
    if fused is None or not _BLOCK.search(f".{layer}."):
        return None
    return f"{parent}.{fused}"


class LayerInfo(StrictModel):
    name: str  # module path, e.g. model.layers.3.mlp.down_proj
    block: int | None  # decoder block index; None for lm_head
    kind: str  # q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head ...
    group: str  # fused group name; a layer that fuses with nothing is its own group
    in_features: int
    out_features: int
    # MoE: the layer is a fused expert parameter [experts, out, in] (transformers 5's
    # mlp.experts.gate_up_proj / down_proj), one (out, in) GEMM per expert.
    experts: int | None = None

    @property
    def weight_count(self) -> int:
        return self.in_features * self.out_features * (self.experts or 1)


class GemmKey(NamedTuple):
    """One GEMM the profile measures: dense (experts None) or an MoE grouped GEMM."""

    out_features: int
    in_features: int
    experts: int | None = None
    experts_per_token: int | None = None


class GroupInfo(StrictModel):
    """Layers TensorRT-LLM fuses into one GEMM: they share a format, cost one GEMM."""

    name: str
    kind: str  # qkv, gate_up, or the layer kind for a single layer
    block: int | None
    members: list[str]
    in_features: int
    out_features: int  # sum of the members' output widths: the fused GEMM's N
    # MoE: the block's experts, one group sharing one format (TensorRT-LLM's MoE kernels take
    # one); its members are the expert GEMMs (gate_up, down), in = out = the hidden size.
    experts: int | None = None
    experts_per_token: int | None = None


class LayerGraph(Artifact):
    KIND: ClassVar[str] = "layers"
    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    architecture: str
    num_blocks: int
    layers: list[LayerInfo]
    groups: list[GroupInfo]
    # Parameters that stay bf16 whatever the plan says (embeddings, norms, lm_head
    # unless quantized): counted in the weight-memory budget as a constant.
    fixed_parameter_bytes: int
    total_parameters: int

    def sharded(self, tp: int) -> LayerGraph:
        """The GEMMs one of `tp` tensor-parallel GPUs runs (TP_SPLIT): the same layers and groups in the same
        order, with per-GPU shapes (a fused group's N is still the sum of its members')."""
        from trtq.errors import InputError, UnsupportedError

        if tp == 1:
            return self
        layers = []
        for layer in self.layers:
            split = TP_SPLIT.get(layer.kind)
            if split is None:
                raise UnsupportedError(
                    f"{self.model}: how TensorRT-LLM shards {layer.kind} layers ({layer.name}) "
                    f"over {tp} GPUs is not known to trtq"
                )
            field = "out_features" if split == "out" else "in_features"
            width = getattr(layer, field)
            if width % tp:
                raise InputError(
                    f"{self.model}: {layer.name} has {width} {'outputs' if split == 'out' else 'inputs'}, "
                    f"which tensor parallelism {tp} does not divide"
                )
            layers.append(layer.model_copy(update={field: width // tp}))
        by_name = {layer.name: layer for layer in layers}
        groups = [
            g
            if g.experts is not None
            else g.model_copy(
                update={  # MoE: in = out = hidden, unsharded
                    "in_features": by_name[g.members[0]].in_features,
                    "out_features": sum(by_name[m].out_features for m in g.members),
                }
            )
            for g in self.groups
        ]
        return self.model_copy(update={"layers": layers, "groups": groups})

    def unique_shapes(self) -> list[tuple[int, int]]:
        """Unique (out, in) dense GEMM shapes over fused groups, in first-seen order (MoE groups: unique_gemms)."""
        seen: dict[tuple[int, int], None] = {}
        for g in self.groups:
            if g.experts is None:
                seen.setdefault((g.out_features, g.in_features), None)
        return list(seen)

    def group_gemms(self, group: GroupInfo) -> list[GemmKey]:
        """The GEMMs one group costs: its fused GEMM, or an MoE group's grouped GEMM per member."""
        if group.experts is None:
            return [GemmKey(group.out_features, group.in_features)]
        members = {layer.name: layer for layer in self.layers if layer.group == group.name}
        return [
            GemmKey(members[m].out_features, members[m].in_features, group.experts, group.experts_per_token)
            for m in group.members
        ]

    def unique_gemms(self) -> list[GemmKey]:
        """Unique GEMMs over all groups, dense and MoE, in first-seen order."""
        seen: dict[GemmKey, None] = {}
        members = {layer.name: layer for layer in self.layers}
        for g in self.groups:
            if g.experts is None:
                seen.setdefault(GemmKey(g.out_features, g.in_features), None)
            else:
                for m in g.members:
                    layer = members[m]
                    seen.setdefault(
                        GemmKey(layer.out_features, layer.in_features, g.experts, g.experts_per_token), None
                    )
        return list(seen)
