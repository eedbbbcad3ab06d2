"""The layer graph of the dense decoder families whose module layout is fixed by config.json alone.

`trtq plan` needs the layer graph (names, shapes, fused groups, the fixed bf16 bytes) but
nothing of the model itself. Building a model on the meta device costs importing torch and
transformers (6-13 s); for Llama, Mistral and Qwen2 the Hugging Face module tree is a
function of a handful of config numbers, so it is written out here instead, in pure Python.
tests/model/test_families.py checks it against the meta-device graph of transformers for
every shipped config, names, shapes, groups and parameter counts included. Other families
return None and go through `trtq.model.layers.build_layer_graph`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import GroupInfo, LayerGraph, LayerInfo
from trtq.errors import InputError
from trtq.model.zoo import ResolvedModel

BF16_BYTES = 2
# Far above any released model, far below what would exhaust memory while enumerating.
MAX_BLOCKS = 4096


@dataclass(frozen=True)
class _Family:
    architecture: str
    attention_bias_default: bool      # q/k/v/o bias when the config does not say
    qkv_bias_fixed: bool | None       # Qwen2: q/k/v always carry a bias, o_proj never
    tie_default: bool


FAMILIES: dict[str, _Family] = {
    "llama": _Family("LlamaForCausalLM", False, None, False),
    "mistral": _Family("MistralForCausalLM", False, None, False),
    "qwen2": _Family("Qwen2ForCausalLM", False, True, False),
}


def _positive_int(config: dict, key: str, name: str, default: int | None = None, most: int | None = None) -> int:
    value = config.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        bound = f" between 1 and {most}" if most is not None else " >= 1"
        raise InputError(f"{name}: config {key} must be a whole number{bound}, got {value!r}")
    return value


def config_layer_graph(resolved: ResolvedModel, include_lm_head: bool = False) -> LayerGraph | None:
    """The layer graph from the config alone, or None for a family not written out here."""
    config = resolved.config
    family = FAMILIES.get(config.get("model_type"))
    if family is None:
        return None
    name = resolved.name
    hidden = _positive_int(config, "hidden_size", name)
    blocks = _positive_int(config, "num_hidden_layers", name, most=MAX_BLOCKS)
    heads = _positive_int(config, "num_attention_heads", name)
    kv_heads = _positive_int(config, "num_key_value_heads", name, default=heads)
    intermediate = _positive_int(config, "intermediate_size", name)
    vocab = _positive_int(config, "vocab_size", name)
    head_dim = _positive_int({"head_dim": config.get("head_dim") or hidden // heads}, "head_dim", name)
    attention_bias = bool(config.get("attention_bias", family.attention_bias_default) or False)
    mlp_bias = bool(config.get("mlp_bias", False) or False)
    qkv_bias = family.qkv_bias_fixed if family.qkv_bias_fixed is not None else attention_bias
    o_bias = False if family.qkv_bias_fixed is not None else attention_bias
    tied = bool(config.get("tie_word_embeddings", family.tie_default))

    # (kind, in, out, bias) in the module order of the Hugging Face implementation
    block_linears = (
        ("self_attn", "q_proj", hidden, heads * head_dim, qkv_bias),
        ("self_attn", "k_proj", hidden, kv_heads * head_dim, qkv_bias),
        ("self_attn", "v_proj", hidden, kv_heads * head_dim, qkv_bias),
        ("self_attn", "o_proj", heads * head_dim, hidden, o_bias),
        ("mlp", "gate_proj", hidden, intermediate, mlp_bias),
        ("mlp", "up_proj", hidden, intermediate, mlp_bias),
        ("mlp", "down_proj", intermediate, hidden, mlp_bias),
    )
    fused = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}
    layers: list[LayerInfo] = []
    groups: dict[str, GroupInfo] = {}
    biases = 0
    for block in range(blocks):
        for parent, kind, n_in, n_out, bias in block_linears:
            prefix = f"model.layers.{block}.{parent}"
            layer_name = f"{prefix}.{kind}"
            group_name = f"{prefix}.{fused[kind]}" if kind in fused else layer_name
            layers.append(LayerInfo(name=layer_name, block=block, kind=kind, group=group_name,
                                    in_features=n_in, out_features=n_out))
            biases += n_out if bias else 0
            group = groups.get(group_name)
            if group is None:
                groups[group_name] = GroupInfo(name=group_name, kind=fused.get(kind, kind), block=block,
                                               members=[layer_name], in_features=n_in, out_features=n_out)
            else:
                group.members.append(layer_name)
                group.out_features += n_out
    if include_lm_head:
        layers.append(LayerInfo(name="lm_head", block=None, kind="lm_head", group="lm_head",
                                in_features=hidden, out_features=vocab))
        groups["lm_head"] = GroupInfo(name="lm_head", kind="lm_head", block=None, members=["lm_head"],
                                      in_features=hidden, out_features=vocab)

    linear_weights = blocks * sum(n_in * n_out for _, _, n_in, n_out, _ in block_linears)
    norms = blocks * 2 * hidden + hidden
    embeddings = vocab * hidden
    lm_head = 0 if tied else vocab * hidden
    total = embeddings + linear_weights + biases + norms + lm_head
    quantizable = sum(layer.in_features * layer.out_features for layer in layers)
    return LayerGraph(
        artifact=LayerGraph.KIND,
        schema_version=LayerGraph.SCHEMA_VERSION,
        metadata=make_metadata(notes=[f"config: {resolved.source}"]),
        model=name,
        architecture=(config.get("architectures") or [family.architecture])[0],
        num_blocks=blocks,
        layers=layers,
        groups=list(groups.values()),
        fixed_parameter_bytes=(total - quantizable) * BF16_BYTES,
        total_parameters=total,
    )
