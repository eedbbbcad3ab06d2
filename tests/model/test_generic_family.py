"""A model_type without an adapter: planned with the generic Llama-like layout when its config reads as a
dense Llama-like decoder and its module tree has that layout; refused in one line naming the model_type
otherwise."""

from __future__ import annotations

import json

from trtq.cli import main
from trtq.model.families import ADAPTERS, config_layer_graph, generic_adapter
from trtq.model.zoo import resolve_model

TINY = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 128}
# Gemma: Llama's module tree (q/k/v/o_proj, gate/up/down_proj) with its own head_dim.
TINY_GEMMA = {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "head_dim": 32, **TINY}
# Phi-3: fused qkv_proj and gate_up_proj modules, all nn.Linear, but not the Llama names.
TINY_PHI3 = {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], **TINY}


def model_dir(tmp_path, config):
    directory = tmp_path / config["model_type"]
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_llama_like_model_without_an_adapter_is_planned_with_the_generic_layout(tmp_path):
    from trtq.model.layers import build_layer_graph
    from trtq.predict.architecture import decoder_architecture

    assert "gemma" not in ADAPTERS
    resolved = resolve_model(str(model_dir(tmp_path, TINY_GEMMA)))
    graph = build_layer_graph(resolved)
    # Checked against transformers' own module tree: the same layers, widths and fused groups.
    from_config = config_layer_graph(resolved, adapter=generic_adapter(resolved.config))
    assert [(l.name, l.in_features, l.out_features) for l in graph.layers] == \
           [(l.name, l.in_features, l.out_features) for l in from_config.layers]
    assert [(g.name, g.kind, g.members) for g in graph.groups] == [(g.name, g.kind, g.members) for g in from_config.groups]
    qkv = next(g for g in graph.groups if g.name == "model.layers.0.self_attn.qkv")
    assert (qkv.in_features, qkv.out_features) == (64, 4 * 32 + 2 * 2 * 32)   # head_dim 32, not 64 / 4
    assert any("generic Llama-like layout" in note for note in graph.metadata.notes)
    # predict reads the same layout from the config alone.
    arch = decoder_architecture(resolved.name, resolved.config)
    assert {g.name for g in arch.groups} == {g.name for g in graph.groups}


def test_an_all_linear_model_with_another_layout_is_refused_naming_its_model_type(tmp_path, capsys):
    code = main(["layers", str(model_dir(tmp_path, TINY_PHI3))])
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[transformers]")]
    assert code == 2 and len(lines) == 1, lines
    assert "no adapter for model_type 'phi3'" in lines[0] and "not the Llama layout" in lines[0]
    assert "qkv_proj" in lines[0] or "gate_up_proj" in lines[0]


def test_a_config_that_is_not_llama_like_gets_no_generic_adapter():
    assert generic_adapter({"model_type": "gemma", **TINY}) is not None
    assert generic_adapter({"model_type": "llama", **TINY}) is None          # it has its own adapter
    assert generic_adapter({"model_type": "gpt2", "n_embd": 64, "n_layer": 2}) is None
    assert generic_adapter({"model_type": "dbrx_like", **TINY, "num_local_experts": 4}) is None
