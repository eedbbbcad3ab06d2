"""Nothing planned silently: weights trtq cannot account for are refused in one line, exit 2 (issue 17)."""

from __future__ import annotations

import json
import re

import pytest

from trtq.cli import main

TINY_GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0}
TINY_MIXTRAL = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 64,
                "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 128, "num_local_experts": 8, "num_experts_per_tok": 2}


def model_dir(tmp_path, config):
    directory = tmp_path / config["model_type"]
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def refused(capsys, *argv) -> str:
    code = main(list(argv))
    _, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if not line.startswith("[transformers]")]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def test_unsupported_family_is_refused_naming_the_unplanned_share(tmp_path, capsys):
    # GPT-2 keeps its weights in Conv1D modules, not nn.Linear: nothing would be planned but lm_head.
    line = refused(capsys, "layers", model_dir(tmp_path, TINY_GPT2))
    share = float(re.search(r": (\d+\.\d)% of its parameters", line).group(1))
    assert share > 50 and "transformer.h.0.attn.c_attn.weight" in line and "no adapter for model_type 'gpt2'" in line


def test_moe_without_its_adapter_is_refused_as_before_issue_17(tmp_path, capsys, monkeypatch):
    """Before the Mixtral adapter, its fused experts were counted as fixed bf16 without a word."""
    from trtq.model import families

    monkeypatch.delitem(families.ADAPTERS, "mixtral")
    line = refused(capsys, "layers", model_dir(tmp_path, TINY_MIXTRAL))
    assert re.search(r": 8\d\.\d% of its parameters \([\d,]+ of [\d,]+, e\.g\. model\.layers\.0\.mlp\.", line), line


def test_moe_with_its_adapter_accounts_for_every_parameter(tmp_path, capsys):
    assert main(["layers", model_dir(tmp_path, TINY_MIXTRAL), "-o", str(tmp_path / "layers.json")]) == 0
    graph = json.loads((tmp_path / "layers.json").read_text())
    planned = sum(layer["in_features"] * layer["out_features"] * (layer["experts"] or 1) for layer in graph["layers"])
    # fixed: embeddings + lm_head (2 x 128 x 64), norms (2 x 2 x 64 + 64), routers (2 x 8 x 64)
    assert graph["total_parameters"] - planned == 2 * 128 * 64 + 5 * 64 + 2 * 8 * 64
    assert graph["fixed_parameter_bytes"] == 2 * (graph["total_parameters"] - planned)


@pytest.mark.parametrize("share", [0.5, 2.0])
def test_the_one_percent_threshold(share, monkeypatch):
    """Unaccounted weights under 1% are tolerated (counted as fixed bf16), over 1% refused."""
    from trtq.errors import UnsupportedError
    from trtq.model import layers
    from trtq.model.zoo import ResolvedModel

    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}
    real = layers._meta_model

    def with_extra_matrix(resolved):
        import torch

        model = real(resolved)
        total = sum(p.numel() for p in model.parameters())
        rows = int(total * share / 100 / 64) + 1
        model.model.extra = torch.nn.Parameter(torch.empty(rows, 64, device="meta"))   # a 2-D weight no one plans
        return model

    monkeypatch.setattr(layers, "_meta_model", with_extra_matrix)
    resolved = ResolvedModel("tiny-llama", config, "test")
    if share < 1:
        graph = layers.build_layer_graph(resolved)
        assert graph.total_parameters > sum(layer.weight_count for layer in graph.layers)
    else:
        with pytest.raises(UnsupportedError, match=r"2\.\d% of its parameters .* e\.g\. model\.extra\)"):
            layers.build_layer_graph(resolved)
