import json

import pytest

from trtq.errors import InputError
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import resolve_model

SHIPPED = ["smollm2-135m", "llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mistral-7b", "mixtral-8x7b", "qwen3-30b-a3b"]


def test_llama_8b_layers_shapes_and_fused_groups():
    graph = build_layer_graph(resolve_model("meta-llama/Llama-3.1-8B"))
    assert graph.model == "llama-3.1-8b" and graph.num_blocks == 32
    assert len(graph.layers) == 32 * 7 and len(graph.groups) == 32 * 4
    by_name = {layer.name: layer for layer in graph.layers}
    q = by_name["model.layers.5.self_attn.q_proj"]
    assert (q.in_features, q.out_features, q.block, q.group) == (4096, 4096, 5, "model.layers.5.self_attn.qkv")
    assert by_name["model.layers.5.self_attn.k_proj"].group == q.group
    assert by_name["model.layers.5.mlp.up_proj"].group == "model.layers.5.mlp.gate_up"
    assert by_name["model.layers.5.mlp.down_proj"].group == "model.layers.5.mlp.down_proj"
    qkv = next(g for g in graph.groups if g.name == q.group)
    assert qkv.kind == "qkv" and qkv.out_features == 4096 + 1024 + 1024 and len(qkv.members) == 3
    assert graph.unique_shapes() == [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
    assert "lm_head" not in by_name
    assert 8.0e9 < graph.total_parameters < 8.1e9
    # embeddings + untied lm_head + norms stay bf16
    assert graph.fixed_parameter_bytes == pytest.approx(2 * 2 * 128256 * 4096, rel=0.001)


@pytest.mark.parametrize("alias", SHIPPED)
def test_every_shipped_config_dedupes_to_few_gemm_shapes(alias):
    graph = build_layer_graph(resolve_model(alias))
    assert 1 <= len(graph.unique_shapes()) <= 10
    assert all(len({m for m in g.members}) == len(g.members) for g in graph.groups)


def test_lm_head_only_when_asked():
    graph = build_layer_graph(resolve_model("smollm2-135m"), include_lm_head=True)
    head = [layer for layer in graph.layers if layer.kind == "lm_head"]
    assert len(head) == 1 and head[0].block is None and head[0].out_features == 49152


def test_shipped_smollm2_config_matches_the_gguf(smollm2_resolved):
    from transformers import AutoConfig

    gguf = smollm2_resolved.weights
    real = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    shipped = resolve_model("smollm2-135m").config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        assert getattr(real, key) == shipped[key], key


def test_local_directory_and_bad_specs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(resolve_model("mistral-7b").config))
    graph = build_layer_graph(resolve_model(str(tmp_path)))
    assert len(graph.layers) == 32 * 7
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(tmp_path / ".."))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        resolve_model(str(tmp_path))
    with pytest.raises(InputError, match="unknown model 'nonsense'"):
        resolve_model("nonsense")


def test_config_only_model_has_no_weights():
    from trtq.model.zoo import load_pretrained

    with pytest.raises(InputError, match="has no weights here"):
        load_pretrained(resolve_model("llama-3.1-70b"))


@pytest.mark.parametrize("alias, billions, experts, top_k", [("mixtral-8x7b", 46.70, 8, 2), ("qwen3-30b-a3b", 30.53, 128, 8)])
def test_shipped_moe_configs_plan_every_expert(alias, billions, experts, top_k):
    graph = build_layer_graph(resolve_model(alias))
    assert graph.total_parameters / 1e9 == pytest.approx(billions, abs=0.01)   # the model cards' sizes
    moe = [g for g in graph.groups if g.kind == "moe"]
    assert len(moe) == graph.num_blocks and {(g.experts, g.experts_per_token) for g in moe} == {(experts, top_k)}
    # the fixed bf16 part is embeddings, lm_head, norms and routers only: under 3% of the weights
    assert graph.fixed_parameter_bytes / (2 * graph.total_parameters) < 0.03
