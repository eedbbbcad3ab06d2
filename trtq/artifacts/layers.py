"""The layer graph of a causal LM: quantizable Linear layers and their fused groups."""

from __future__ import annotations

import re
from typing import ClassVar

from trtq.artifacts.io import Artifact, StrictModel

# Layer kind -> the fused group kind TensorRT-LLM builds from it (inside a decoder block):
# q/k/v become one QKV GEMM and gate/up one GEMM, so they must share one format.
FUSED_KINDS: dict[str, str] = {
    "q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv",
    "gate_proj": "gate_up", "up_proj": "gate_up",
}
_BLOCK = re.compile(r"\.layers\.(\d+)\.")


def fused_group_name(layer: str) -> str | None:
    """The fused group a layer of this name belongs to (e.g. model.layers.3.self_attn.qkv), or None."""
    parent, _, kind = layer.rpartition(".")
    fused = FUSED_KINDS.get(kind)
    if fused is None or not _BLOCK.search(f".{layer}."):
        return None
    return f"{parent}.{fused}"


class LayerInfo(StrictModel):
    name: str            # module path, e.g. model.layers.3.mlp.down_proj
    block: int | None    # decoder block index; None for lm_head
    kind: str            # q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head ...
    group: str           # fused group name; a layer that fuses with nothing is its own group
    in_features: int
    out_features: int


class GroupInfo(StrictModel):
    """Layers TensorRT-LLM fuses into one GEMM: they share a format, cost one GEMM."""

    name: str
    kind: str            # qkv, gate_up, or the layer kind for a single layer
    block: int | None
    members: list[str]
    in_features: int
    out_features: int    # sum of the members' output widths: the fused GEMM's N


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

    def unique_shapes(self) -> list[tuple[int, int]]:
        """Unique (out, in) GEMM shapes over fused groups, in first-seen order."""
        seen: dict[tuple[int, int], None] = {}
        for g in self.groups:
            seen.setdefault((g.out_features, g.in_features), None)
        return list(seen)
