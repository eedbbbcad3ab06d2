"""`trtq sensitivity --method hessian` on the real SmolLM2, and its malformed inputs."""

from __future__ import annotations

import pytest

from trtq.artifacts import load_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.cli import main


def test_hessian_table_on_the_real_model(tmp_path, capsys, smollm2_graph, loads_smollm2):
    out = tmp_path / "hessian.json"
    code = main(["sensitivity", "smollm2-135m", "--method", "hessian", "--samples", "2", "--seq-len", "32",
                 "--max-iterations", "3", "--formats", "fp8,int4_awq,nvfp4", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    table = load_artifact(out, Sensitivity)
    assert table.method == "hessian" and table.formats == ["bf16", "fp8", "int4_awq", "nvfp4"]
    assert table.settings["samples"] == 2 and table.settings["seq_len"] == 32
    layers = [layer.name for layer in smollm2_graph.layers]
    traces = {(t.layer, t.operand): t for t in table.traces}
    assert [t.layer for t in table.traces if t.operand == "weight"] == layers
    assert [t.layer for t in table.traces if t.operand == "input"] == layers
    for trace in table.traces:
        assert 2 <= trace.iterations <= 3
        assert trace.converged == (trace.relative_change < 0.05)
    # Same schema as --method weight: one row per (layer, format); the traces behind each row are recorded.
    assert len(table.rows) == len(layers) * 4
    numel = {layer.name: layer.in_features * layer.out_features for layer in smollm2_graph.layers}
    for layer in smollm2_graph.layers:
        assert traces[layer.name, "weight"].numel == numel[layer.name]
        assert traces[layer.name, "input"].numel == 32 * layer.in_features  # one window's tokens x channels
    for row in table.rows:
        assert row.hessian_trace == pytest.approx(traces[row.layer, "weight"].trace / numel[row.layer])
        assert row.input_hessian_trace == pytest.approx(
            traces[row.layer, "input"].trace / traces[row.layer, "input"].numel)
        assert row.omega > 0 and row.weight_error > 0 and row.input_error >= 0
    # The loss curves upwards along most weights and inputs of a trained model (3 probes are noisy, so loosely).
    for operand in ("weight", "input"):
        assert sum(traces[layer, operand].trace > 0 for layer in layers) > 0.5 * len(layers), operand
    by_format = {f: sum(r.omega for r in table.rows if r.format == f) for f in table.formats}
    assert by_format["bf16"] < by_format["fp8"] < by_format["int4_awq"]


@pytest.mark.parametrize("extra, needle", [
    (["--calib", "no-such-file.txt"], "text file not found"),
    (["--tolerance", "2"], "tolerance must be between 0 and 1"),
    (["--max-iterations", "1"], "max iterations must be at least 2"),
    pytest.param(["--samples", "100000", "--seq-len", "512"], "windows of 512, fewer than the 100000 asked for",
                 marks=pytest.mark.slow),  # found only once the model's tokenizer has cut the text
])
def test_malformed_hessian_inputs_exit_2_with_one_line(tmp_path, capsys, extra, needle):
    out = tmp_path / "s.json"
    code = main(["sensitivity", "smollm2-135m", "--method", "hessian", *extra, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("trtq: error:") and err.count("\n") == 1 and needle in err, err
    assert not out.exists()


@pytest.mark.parametrize("extra, needle", [(["--samples", "0"], "must be at least 1"),
                                           (["--seq-len", "x"], "not an integer")])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, extra, needle):
    code = main(["sensitivity", "smollm2-135m", "--method", "hessian", *extra, "-o", str(tmp_path / "s.json")])
    assert code == 2 and needle in capsys.readouterr().err
