"""The torch-free block enumeration agrees with trtq's meta-device layer graph."""

from __future__ import annotations

import pytest

from trtq.errors import UnsupportedError
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import resolve_model
from trtq.predict.architecture import decoder_architecture


@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "smollm2-135m"])
def test_groups_match_the_layer_graph(model):
    resolved = resolve_model(model)
    graph = build_layer_graph(resolved)
    arch = decoder_architecture(resolved.name, resolved.config)
    assert [(g.name, g.kind, g.block, g.out_features, g.in_features) for g in arch.groups] == [
        (g.name, g.kind, g.block, g.out_features, g.in_features) for g in graph.groups]
    assert arch.num_layers == graph.num_blocks


def test_tp_sharding_and_kv_size():
    resolved = resolve_model("llama-3.1-70b")
    arch = decoder_architecture(resolved.name, resolved.config)
    qkv, o, gate_up, down = arch.groups[:4]
    assert qkv.sharded(2) == (5120, 8192) and gate_up.sharded(2) == (28672, 8192)
    assert o.sharded(2) == (8192, 4096) and down.sharded(2) == (8192, 14336)
    assert arch.kv_elements_per_token(1) == 2 * 8 * 128 * 80
    assert arch.kv_elements_per_token(16) == 2 * 1 * 128 * 80   # KV heads replicate past 8


def test_families_without_an_adapter_are_refused():
    with pytest.raises(UnsupportedError, match="model_type 'gpt2' is not built yet"):
        decoder_architecture("m", {"model_type": "gpt2"})


def test_mixtral_blocks_hold_one_expert_group_each():
    resolved = resolve_model("mixtral-8x7b")
    arch = decoder_architecture(resolved.name, resolved.config)
    moe = [g for g in arch.groups if g.kind == "moe"]
    assert len(moe) == 32 and len(arch.groups) == 32 * 3
    assert moe[0].name == "model.layers.0.mlp.experts"
    assert (moe[0].experts, moe[0].experts_per_token) == (8, 2)
    assert moe[0].expert_gemms(2) == ((14336, 4096), (4096, 7168))


def test_qwen3_dense_blocks_come_from_the_same_adapter():
    """Qwen3's head_dim defaults to 128 (not hidden / heads): the adapter says so for both views."""
    from trtq.model.zoo import ResolvedModel

    config = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}
    graph = build_layer_graph(ResolvedModel("tiny-qwen3", config, "test"))
    arch = decoder_architecture("tiny-qwen3", config)
    assert arch.head_dim == 128 and arch.groups[0].out_features == (4 + 2 * 2) * 128
    assert [(g.name, g.kind, g.block, g.out_features, g.in_features) for g in arch.groups] == [
        (g.name, g.kind, g.block, g.out_features, g.in_features) for g in graph.groups]


def test_qwen3_moe_experts_are_sized_by_moe_intermediate_size():
    resolved = resolve_model("qwen3-30b-a3b")
    arch = decoder_architecture(resolved.name, resolved.config)
    moe = [g for g in arch.groups if g.kind == "moe"]
    config = resolved.config
    assert len(moe) == config["num_hidden_layers"]
    assert (moe[0].experts, moe[0].experts_per_token) == (config["num_experts"], config["num_experts_per_tok"])
    assert moe[0].expert_gemms(1)[1] == (config["hidden_size"], config["moe_intermediate_size"])
