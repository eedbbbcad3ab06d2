"""`trtq sensitivity --method weight` and `--method fisher` on the real SmolLM2, through the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from trtq.artifacts import load_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.cli import main

SAMPLE_LAYERS = ("model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "model.layers.29.mlp.up_proj")


def _fp8_per_tensor(w: torch.Tensor) -> torch.Tensor:
    """FP8 E4M3 per-tensor fake quantization from torch's own cast (ModelOpt's FP8 weight quantizer: amax / 448)."""
    scale = w.abs().amax() / 448.0
    return (w / scale).to(torch.float8_e4m3fn).to(torch.float32) * scale


def test_weight_table_is_the_squared_weight_error(tmp_path, capsys, smollm2_model, smollm2_graph):
    out = tmp_path / "weight.yaml"
    code = main(["sensitivity", "smollm2-135m", "--method", "weight", "--formats", "fp8,int4_awq", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    table = load_artifact(out, Sensitivity)
    assert table.method == "weight" and table.model == "smollm2-135m"
    assert table.formats == ["bf16", "fp8", "int4_awq"]
    layers = [layer.name for layer in smollm2_graph.layers]
    assert len(layers) == 210 and len(table.rows) == 3 * len(layers)
    rows = {(r.layer, r.format): r for r in table.rows}
    modules = dict(smollm2_model[0].named_modules())
    for name in SAMPLE_LAYERS:
        w = modules[name].weight.detach().float()
        expected = float((_fp8_per_tensor(w) - w).double().pow(2).sum())
        assert rows[name, "fp8"].omega == pytest.approx(expected, rel=1e-5), name
        # bf16 is the reference precision: the weights round to it only.
        assert rows[name, "bf16"].omega == pytest.approx(float((w.bfloat16().float() - w).double().pow(2).sum()),
                                                         rel=1e-5, abs=1e-12), name
    # Four bits lose more than eight on every layer.
    assert all(rows[n, "int4_awq"].omega > rows[n, "fp8"].omega for n in layers)


def test_fisher_table_on_the_real_model(tmp_path, capsys, smollm2_graph, loads_smollm2):
    out = tmp_path / "fisher.json"
    code = main(["sensitivity", "smollm2-135m", "--method", "fisher", "--samples", "2", "--seq-len", "32",
                 "--formats", "fp8,int4_awq", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    table = load_artifact(out, Sensitivity)
    assert table.method == "fisher" and table.formats == ["bf16", "fp8", "int4_awq"]
    assert table.settings["samples"] == 2 and table.settings["seq_len"] == 32
    layers = [layer.name for layer in smollm2_graph.layers]
    rows = {(r.layer, r.format): r for r in table.rows}
    assert set(rows) == {(n, f) for n in layers for f in table.formats}
    assert all(math.isfinite(r.omega) and r.omega >= 0 for r in table.rows)
    # The loss is more sensitive to 4-bit weights than to FP8 almost everywhere (2 windows: loosely).
    worse = sum(rows[n, "int4_awq"].omega > rows[n, "fp8"].omega for n in layers)
    assert worse > 0.9 * len(layers)
    by_format = {f: sum(rows[n, f].omega for n in layers) for f in table.formats}
    assert by_format["bf16"] < by_format["fp8"] < by_format["int4_awq"]
