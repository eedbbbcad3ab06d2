"""Model families as data: one adapter per Hugging Face `model_type`, and the layer graph from config.json.

An adapter says, for one family, everything trtq needs to know beyond config.json's numbers:
where the decoder blocks are, which Linear layers TensorRT-LLM fuses (q/k/v, gate/up), how the
MoE experts are laid out (transformers 5 stores them as fused `[experts, out, in]` parameters
`mlp.experts.gate_up_proj` / `mlp.experts.down_proj`, not `nn.Linear`), what stays bf16 whatever
the plan says (embeddings, norms, MoE router, shared-expert gate), and TensorRT-LLM's decoder type.

Both layer enumerations derive from it: `config_layer_graph` here (pure Python, `trtq plan`),
`trtq.model.layers.build_layer_graph` (meta device, checks the adapter against the real module
tree and refuses weights it cannot account for), and the step model's block view
(`trtq.predict.architecture`). tests/plan/test_layer_graph.py holds the pure-Python graph equal
to the meta-device graph of transformers for every family, names, shapes, groups and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import FUSED_KINDS, GroupInfo, LayerGraph, LayerInfo  # FUSED_KINDS: q/k/v, gate/up
from trtq.errors import InputError
from trtq.model.zoo import ResolvedModel

BF16_BYTES = 2
# Far above any released model, far below what would exhaust memory while enumerating.
MAX_BLOCKS = 4096
# The MoE experts of one block: one planned group (TensorRT-LLM's MoE kernels take one format).
MOE_GROUP_KIND = "moe"
EXPERT_KINDS = {"gate_up_proj": "experts_gate_up", "down_proj": "experts_down"}
# Config entries that fix a model's weight shapes (a checkpoint of another model disagrees on one).
SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "num_local_experts",
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
)


@dataclass(frozen=True)
class MoeLayout:
    """Where a family keeps its experts and which config keys size them."""

    experts_key: str  # number of routed experts
    intermediate_key: str  # one expert's intermediate width
    shared_intermediate_key: str | None  # the shared expert's width (planned as a dense MLP)
    sparse_step: bool  # honours decoder_sparse_step and mlp_only_layers
    experts_path: str = "mlp.experts"  # module holding gate_up_proj [E, 2I, H], down_proj [E, H, I]
    shared_path: str = "mlp.shared_expert"
    router: str = "mlp.gate"  # stays bf16
    shared_gate: str | None = None  # stays bf16 (Qwen2-MoE's 1 x H sigmoid gate)
    # How checkpoints on disk (and transformers 5's own save_pretrained) name the MoE block: per-expert
    # Linear weights {checkpoint_mlp}.experts.{e}.{gate, up, down}.weight, fused on load.
    checkpoint_mlp: str = "mlp"
    checkpoint_expert_names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FamilyAdapter:
    model_type: str
    architecture: str  # the transformers class (config.architectures otherwise)
    trtllm_decoder_type: str | None  # ModelOpt export_tensorrt_llm_checkpoint(decoder_type=...): its get_model_type
    qkv_bias: str | bool  # a config key (default False unless qkv_bias_default) or fixed
    o_bias_follows_qkv: bool  # o_proj carries the q/k/v bias setting (Llama, Qwen3) or never (Qwen2)
    qkv_bias_default: bool = False
    mlp_bias_key: str | None = None  # Llama's mlp_bias
    head_dim_default: int | None = None  # Qwen3: 128 when config.json has none; else hidden / heads
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k (bf16)
    moe: MoeLayout | None = None
    block_path: str = "model.layers"

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def fixed_bf16_modules(self) -> tuple[str, ...]:
        """Module suffixes inside a block whose weights stay bf16 (never planned)."""
        if self.moe is None:
            return ()
        return (self.moe.router,) + ((self.moe.shared_gate,) if self.moe.shared_gate else ())


_QWEN_MOE: dict[str, Any] = dict(experts_key="num_experts", intermediate_key="moe_intermediate_size", sparse_step=True)
ADAPTERS: dict[str, FamilyAdapter] = {
    a.model_type: a
    for a in (
        FamilyAdapter("llama", "LlamaForCausalLM", "llama", "attention_bias", True, mlp_bias_key="mlp_bias"),
        FamilyAdapter("mistral", "MistralForCausalLM", "llama", False, True),
        FamilyAdapter("qwen2", "Qwen2ForCausalLM", "qwen", True, False),
        FamilyAdapter("qwen3", "Qwen3ForCausalLM", "qwen", "attention_bias", True, head_dim_default=128, qk_norm=True),
        FamilyAdapter(
            "mixtral",
            "MixtralForCausalLM",
            "llama",
            False,
            True,
            moe=MoeLayout(
                "num_local_experts",
                "intermediate_size",
                None,
                sparse_step=False,
                checkpoint_mlp="block_sparse_moe",
                checkpoint_expert_names=("w1", "w3", "w2"),
            ),
        ),
        FamilyAdapter(
            "qwen2_moe",
            "Qwen2MoeForCausalLM",
            "qwen",
            "qkv_bias",
            False,
            qkv_bias_default=True,
            moe=MoeLayout(
                **_QWEN_MOE,
                shared_intermediate_key="shared_expert_intermediate_size",
                shared_gate="mlp.shared_expert_gate",
            ),
        ),
        FamilyAdapter(
            "qwen3_moe",
            "Qwen3MoeForCausalLM",
            "qwen3moe",
            "attention_bias",
            True,
            qk_norm=True,
            moe=MoeLayout(**_QWEN_MOE, shared_intermediate_key=None),
        ),
    )
}
# TensorRT-LLM decoder type per model_type, for the models ModelOpt exports.
TRTLLM_DECODER_TYPES = {t: a.trtllm_decoder_type for t, a in ADAPTERS.items() if a.trtllm_decoder_type}


def adapter_for(config: dict[str, Any]) -> FamilyAdapter | None:
    return ADAPTERS.get(config.get("model_type"))


# What a Llama-like decoder's config.json gives; with these and no expert keys, a model_type without
# an adapter is read as Llama-like: q/k/v/o_proj and gate/up/down_proj, all nn.Linear, per block.
LLAMA_LIKE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def generic_adapter(config: dict[str, Any]) -> FamilyAdapter | None:
    """The Llama layout for an adapter-less model_type whose config reads as a dense Llama-like decoder.

    Config-driven only: whether its module tree really has that layout is checked where the model is
    built (trtq.model.layers.build_layer_graph), which refuses the model otherwise.
    """
    model_type = config.get("model_type")
    if model_type in ADAPTERS or any(k not in config for k in LLAMA_LIKE_KEYS) or any(config.get(k) for k in MOE_KEYS):
        return None
    architecture = (config.get("architectures") or [None])[0] or f"{model_type}ForCausalLM"
    return FamilyAdapter(str(model_type), architecture, None, "attention_bias", True, mlp_bias_key="mlp_bias")


def not_llama_like(config: dict[str, Any]) -> str:
    """Why generic_adapter declines the config (one clause)."""
    missing = [k for k in LLAMA_LIKE_KEYS if k not in config]
    if missing:
        return f"its config has no {', '.join(missing)}"
    return f"its config has routed experts ({', '.join(k for k in MOE_KEYS if config.get(k))})"


def _positive_int(config: dict, key: str, name: str, default: int | None = None, most: int | None = None) -> int:
    value = config.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        bound = f" between 1 and {most}" if most is not None else " >= 1"
        raise InputError(f"{name}: config {key} must be a whole number{bound}, got {value!r}")
    return value


@dataclass(frozen=True)
class Linear:
    """One quantizable weight of a block: an nn.Linear, or a fused expert parameter [experts, out, in]."""

    path: str  # inside the block, e.g. self_attn.q_proj, mlp.experts.gate_up_proj
    kind: str
    in_features: int
    out_features: int
    bias: bool = False
    experts: int | None = None

    @property
    def group_suffix(self) -> str:
        """The fused group's path inside the block."""
        parent, _, leaf = self.path.rpartition(".")
        if self.experts is not None:
            return parent
        fused = FUSED_KINDS.get(leaf)
        return f"{parent}.{fused}" if fused else self.path

    @property
    def group_kind(self) -> str:
        if self.experts is not None:
            return MOE_GROUP_KIND
        return FUSED_KINDS.get(self.kind, self.kind)


@dataclass(frozen=True)
class Block:
    linears: tuple[Linear, ...]
    fixed_parameters: int  # norms, router, shared-expert gate: bf16 whatever the plan
    experts_per_token: int | None


@dataclass(frozen=True)
class Dims:
    """A family's config.json numbers, with the family's defaults where the file is silent."""

    name: str
    hidden: int
    blocks: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    experts: int | None = None
    experts_per_token: int | None = None
    moe_intermediate: int | None = None
    shared_intermediate: int | None = None
    dense_blocks: frozenset[int] = frozenset()  # MoE families: blocks with a dense MLP instead


def read_dims(adapter: FamilyAdapter, config: dict[str, Any], name: str) -> Dims:
    hidden = _positive_int(config, "hidden_size", name)
    blocks = _positive_int(config, "num_hidden_layers", name, most=MAX_BLOCKS)
    heads = _positive_int(config, "num_attention_heads", name)
    kv_heads = _positive_int(config, "num_key_value_heads", name, default=heads)
    head_dim = _positive_int(
        {"head_dim": config.get("head_dim") or adapter.head_dim_default or hidden // heads}, "head_dim", name
    )
    if isinstance(adapter.qkv_bias, bool):
        qkv_bias = adapter.qkv_bias
    else:
        qkv_bias = bool(config.get(adapter.qkv_bias, adapter.qkv_bias_default) or False)
    moe: dict[str, Any] = {}
    layout = adapter.moe
    if layout is not None:
        moe["experts"] = _positive_int(config, layout.experts_key, name)
        moe["experts_per_token"] = _positive_int(config, "num_experts_per_tok", name, most=moe["experts"])
        moe["moe_intermediate"] = _positive_int(config, layout.intermediate_key, name)
        if layout.shared_intermediate_key:
            moe["shared_intermediate"] = _positive_int(config, layout.shared_intermediate_key, name)
        if layout.sparse_step:
            step = _positive_int(config, "decoder_sparse_step", name, default=1)
            only = config.get("mlp_only_layers") or []
            if not isinstance(only, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in only):
                raise InputError(f"{name}: config mlp_only_layers must be a list of block indices, got {only!r}")
            moe["dense_blocks"] = frozenset(b for b in range(blocks) if b in only or (b + 1) % step)
    return Dims(
        name=name,
        hidden=hidden,
        blocks=blocks,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=_positive_int(config, "intermediate_size", name),
        vocab=_positive_int(config, "vocab_size", name),
        tied=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=qkv_bias and adapter.o_bias_follows_qkv,
        mlp_bias=bool(config.get(adapter.mlp_bias_key, False) or False) if adapter.mlp_bias_key else False,
        **moe,
    )


def _mlp(prefix: str, hidden: int, intermediate: int, bias: bool) -> list[Linear]:
    return [
        Linear(f"{prefix}.gate_proj", "gate_proj", hidden, intermediate, bias),
        Linear(f"{prefix}.up_proj", "up_proj", hidden, intermediate, bias),
        Linear(f"{prefix}.down_proj", "down_proj", intermediate, hidden, bias),
    ]


def block_layout(adapter: FamilyAdapter, dims: Dims, block: int) -> Block:
    """The quantizable weights of one decoder block, in the module order of transformers."""
    h, q_out, kv_out = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    linears = [
        Linear("self_attn.q_proj", "q_proj", h, q_out, dims.qkv_bias),
        Linear("self_attn.k_proj", "k_proj", h, kv_out, dims.qkv_bias),
        Linear("self_attn.v_proj", "v_proj", h, kv_out, dims.qkv_bias),
        Linear("self_attn.o_proj", "o_proj", q_out, h, dims.o_bias),
    ]
    fixed = 2 * h + (2 * dims.head_dim if adapter.qk_norm else 0)
    layout = adapter.moe
    if layout is None or block in dims.dense_blocks:
        return Block(tuple(linears + _mlp("mlp", h, dims.intermediate, dims.mlp_bias)), fixed, None)
    e, inter = dims.experts, dims.moe_intermediate
    linears += [
        Linear(f"{layout.experts_path}.gate_up_proj", EXPERT_KINDS["gate_up_proj"], h, 2 * inter, experts=e),
        Linear(f"{layout.experts_path}.down_proj", EXPERT_KINDS["down_proj"], inter, h, experts=e),
    ]
    if dims.shared_intermediate:
        linears += _mlp(layout.shared_path, h, dims.shared_intermediate, False)
    fixed += e * h + (h if layout.shared_gate else 0)
    return Block(tuple(linears), fixed, dims.experts_per_token)


def group_layers(layers: list[LayerInfo], experts_per_token: dict[int, int | None], model: str) -> list[GroupInfo]:
    """Fused groups in first-member order: q/k/v and gate/up fuse, a block's experts form one group."""
    groups: dict[str, GroupInfo] = {}
    for layer in layers:
        g = groups.get(layer.group)
        if g is None:
            if layer.experts is not None:
                groups[layer.group] = GroupInfo(
                    name=layer.group,
                    kind=MOE_GROUP_KIND,
                    block=layer.block,
                    members=[layer.name],
                    in_features=layer.in_features,
                    out_features=layer.in_features,
                    experts=layer.experts,
                    experts_per_token=experts_per_token.get(layer.block),
                )
            else:
                fused = layer.group != layer.name
                groups[layer.group] = GroupInfo(
                    name=layer.group,
                    kind=FUSED_KINDS.get(layer.kind, layer.kind) if fused else layer.kind,
                    block=layer.block,
                    members=[layer.name],
                    in_features=layer.in_features,
                    out_features=layer.out_features,
                )
        else:
            g.members.append(layer.name)
            if g.experts is not None:
                continue  # an MoE group maps the block's hidden state to itself: in = out = hidden
            if g.in_features != layer.in_features:
                raise InputError(f"{model}: fused group {g.name} mixes input widths")
            g.out_features += layer.out_features
    return list(groups.values())


def config_layer_graph(
    resolved: ResolvedModel, include_lm_head: bool = False, adapter: FamilyAdapter | None = None
) -> LayerGraph | None:
    """The layer graph from the config alone, or None for a family without an adapter.

    `adapter`: another layout to read the config with (the generic Llama-like one)."""
    config = resolved.config
    adapter = adapter or adapter_for(config)
    if adapter is None:
        return None
    name = resolved.name
    dims = read_dims(adapter, config, name)
    layers: list[LayerInfo] = []
    experts_per_token: dict[int, int | None] = {}
    total = dims.vocab * dims.hidden * (1 if dims.tied else 2) + dims.hidden  # embeddings, lm_head, final norm
    for b in range(dims.blocks):
        block = block_layout(adapter, dims, b)
        experts_per_token[b] = block.experts_per_token
        total += block.fixed_parameters
        for linear in block.linears:
            prefix = f"{adapter.block_path}.{b}"
            layers.append(
                LayerInfo(
                    name=f"{prefix}.{linear.path}",
                    block=b,
                    kind=linear.kind,
                    group=f"{prefix}.{linear.group_suffix}",
                    in_features=linear.in_features,
                    out_features=linear.out_features,
                    experts=linear.experts,
                )
            )
            total += linear.in_features * linear.out_features * (linear.experts or 1)
            total += linear.out_features if linear.bias else 0
    if include_lm_head:
        layers.append(
            LayerInfo(
                name="lm_head",
                block=None,
                kind="lm_head",
                group="lm_head",
                in_features=dims.hidden,
                out_features=dims.vocab,
            )
        )
    groups = group_layers(layers, experts_per_token, name)
    quantizable = sum(layer.weight_count for layer in layers)
    return LayerGraph.create(
        metadata=make_metadata(notes=[f"config: {resolved.source}"]),
        model=name,
        architecture=(config.get("architectures") or [adapter.architecture])[0],
        num_blocks=dims.blocks,
        layers=layers,
        groups=groups,
        fixed_parameter_bytes=(total - quantizable) * BF16_BYTES,
        total_parameters=total,
    )
