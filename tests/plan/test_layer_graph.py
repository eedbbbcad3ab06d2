"""`trtq plan`'s torch-free layer graph is the graph transformers builds on the meta device."""

import pytest

from trtq.errors import InputError
from trtq.model.families import config_layer_graph
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ZOO, ResolvedModel, resolve_model


@pytest.mark.parametrize("include_lm_head", [False, True])
@pytest.mark.parametrize("alias", list(ZOO))
def test_config_graph_equals_the_meta_device_graph(alias, include_lm_head):
    resolved = resolve_model(alias)
    from_config = config_layer_graph(resolved, include_lm_head=include_lm_head)
    from_torch = build_layer_graph(resolved, include_lm_head=include_lm_head)
    assert from_config is not None
    assert from_config.model_dump(exclude={"metadata"}) == from_torch.model_dump(exclude={"metadata"})


def test_variants_of_a_family_config_match_transformers():
    """Attention and MLP biases, an explicit head_dim, no num_key_value_heads, tied embeddings."""
    base = dict(resolve_model("smollm2-135m").config, num_hidden_layers=2)
    for change in ({"attention_bias": True, "mlp_bias": True}, {"head_dim": 32}, {"tie_word_embeddings": False},
                   {"num_key_value_heads": None}):
        config = {**base, **change}
        if config["num_key_value_heads"] is None:
            del config["num_key_value_heads"]
        resolved = ResolvedModel("variant", config, "test")
        assert (config_layer_graph(resolved).model_dump(exclude={"metadata"})
                == build_layer_graph(resolved).model_dump(exclude={"metadata"})), change


def test_other_families_fall_back_and_bad_numbers_are_refused():
    resolved = resolve_model("smollm2-135m")
    assert config_layer_graph(ResolvedModel("x", dict(resolved.config, model_type="gpt2"), "test")) is None
    for key, value in (("num_hidden_layers", 1e9), ("num_hidden_layers", 10**9), ("hidden_size", 0),
                       ("vocab_size", "many")):
        with pytest.raises(InputError, match=f"config {key} must be a whole number"):
            config_layer_graph(ResolvedModel("x", dict(resolved.config, **{key: value}), "test"))


TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=128)
# One tiny config per family adapter, with the family's variants (biases, head_dim, dense blocks in an MoE).
TINY_FAMILIES = {
    "llama": {"attention_bias": True, "mlp_bias": True},
    "mistral": {"head_dim": 32},
    "qwen2": {"tie_word_embeddings": True},
    "qwen3": {},                                     # head_dim defaults to 128, not hidden / heads
    "qwen3-bias": {"model_type": "qwen3", "head_dim": 32, "attention_bias": True},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                  "shared_expert_intermediate_size": 40, "mlp_only_layers": [1]},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24, "decoder_sparse_step": 2},
}


def tiny(family: str) -> ResolvedModel:
    return ResolvedModel(f"tiny-{family}", {**TINY, "model_type": family, **TINY_FAMILIES[family]}, "test")


def test_every_adapter_has_a_tiny_config():
    from trtq.model.families import ADAPTERS

    assert set(ADAPTERS) <= {r.config["model_type"] for r in map(tiny, TINY_FAMILIES)}


@pytest.mark.parametrize("include_lm_head", [False, True])
@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_every_family_adapter_gives_the_meta_device_graph(family, include_lm_head):
    resolved = tiny(family)
    from_config = config_layer_graph(resolved, include_lm_head=include_lm_head)
    from_torch = build_layer_graph(resolved, include_lm_head=include_lm_head)
    assert from_config.model_dump(exclude={"metadata"}) == from_torch.model_dump(exclude={"metadata"})


def test_tiny_mixtral_graph_counts_every_parameter():
    import torch

    from trtq.model.layers import _meta_model

    resolved = tiny("mixtral")
    graph = build_layer_graph(resolved)
    model = _meta_model(resolved)
    params = dict(model.named_parameters())
    assert graph.total_parameters == sum(p.numel() for p in params.values())
    experts = [layer for layer in graph.layers if layer.experts]
    # every expert weight is planned: [4 experts, 2 x 96, 64] and [4, 64, 96] per block, 3 blocks
    assert [(layer.kind, layer.experts, layer.out_features, layer.in_features) for layer in experts[:2]] == [
        ("experts_gate_up", 4, 192, 64), ("experts_down", 4, 64, 96)]
    assert sum(layer.weight_count for layer in experts) == sum(
        p.numel() for n, p in params.items() if ".mlp.experts." in n) == 3 * 4 * (192 * 64 + 64 * 96)
    moe = [g for g in graph.groups if g.kind == "moe"]
    assert [(g.name, g.members, g.experts, g.experts_per_token) for g in moe[:1]] == [
        ("model.layers.0.mlp.experts", ["model.layers.0.mlp.experts.gate_up_proj",
                                        "model.layers.0.mlp.experts.down_proj"], 4, 2)]
    assert len(moe) == 3
    # what stays bf16: embeddings, lm_head, norms and the router (mlp.gate [4, 64]), nothing else
    fixed = sum(p.numel() for n, p in params.items()
                if n.startswith(("model.embed_tokens", "lm_head")) or "norm" in n or n.endswith("mlp.gate.weight"))
    planned = sum(layer.weight_count for layer in graph.layers)
    assert planned + fixed == graph.total_parameters
    assert graph.fixed_parameter_bytes == 2 * fixed
    assert torch.Size([4, 64]) == params["model.layers.0.mlp.gate.weight"].shape
    assert not any("gate.weight" in layer.name for layer in graph.layers)


def test_qwen2_moe_shared_expert_is_dense_and_its_gate_stays_bf16():
    graph = build_layer_graph(tiny("qwen2_moe"))
    groups = {g.name: g for g in graph.groups}
    assert groups["model.layers.0.mlp.shared_expert.gate_up"].kind == "gate_up"
    assert groups["model.layers.0.mlp.shared_expert.down_proj"].experts is None
    assert "model.layers.1.mlp.experts" not in groups and "model.layers.1.mlp.gate_up" in groups   # mlp_only_layers
    assert not any("shared_expert_gate" in layer.name for layer in graph.layers)


def test_unplanned_weights_are_refused_naming_their_share(monkeypatch):
    from trtq.errors import UnsupportedError
    from trtq.model import families, layers

    # An unsupported family whose big weights are not nn.Linear (GPT-2's Conv1D).
    gpt2 = ResolvedModel("tiny-gpt2", {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                                       "vocab_size": 128, "n_positions": 64}, "test")
    with pytest.raises(UnsupportedError, match=r"tiny-gpt2: \d+\.\d% of its parameters .* e\.g\. "
                                               r"transformer\.h\.0\.attn\.c_attn\.weight.*no adapter for model_type"):
        build_layer_graph(gpt2)
    # The MoE case as it was before the adapter: experts as fused parameters nobody planned.
    monkeypatch.delitem(families.ADAPTERS, "mixtral")
    with pytest.raises(UnsupportedError, match=r"tiny-mixtral: 8\d\.\d% of its parameters"):
        layers.build_layer_graph(tiny("mixtral"))
