"""`trtq eval` end to end on the real SmolLM2: the gate's verdict, its exit code, its artifact."""

from __future__ import annotations

import json

import pytest

from tests.quantize.plans import plan_from_graph
from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.eval import EvalResult
from trtq.cli import main

# Small enough for 2 cores: 4 windows of 128 tokens, 2 calibration windows of 128.
FAST = ["--seq-len", "128", "--windows", "4", "--calib-samples", "2", "--calib-seq-len", "128"]


def run(capsys, *argv):
    code = main(["eval", "smollm2-135m", *argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def plans(smollm2_graph, tmp_path_factory):
    directory = tmp_path_factory.mktemp("plans")
    one_fp8 = plan_from_graph(smollm2_graph, lambda i, name, kind: "fp8" if i == 0 else "bf16")
    all_fp8 = plan_from_graph(smollm2_graph, lambda i, name, kind: "fp8")
    nvfp4_mlp = plan_from_graph(smollm2_graph, lambda i, name, kind: "nvfp4" if kind == "gate_up" else "bf16")
    paths = {}
    for name, plan in {"one_fp8": one_fp8, "all_fp8": all_fp8, "nvfp4_mlp": nvfp4_mlp}.items():
        paths[name] = save_artifact(plan, directory / f"{name}.yaml")
    return paths


@pytest.mark.slow  # `trtq eval` loads the real model
def test_gate_passes_a_mild_plan_and_writes_the_artifact(plans, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code, err = run(capsys, "--plan", str(plans["one_fp8"]), *FAST, "-o", str(out),
                    "--lm-eval", "trtq_devil_definitions", "--lm-eval-limit", "4")
    assert code == 0, err
    assert "PASS: perplexity" in err
    result = load_artifact(out, EvalResult)
    assert result.source == "plan" and result.plan_sha256 and result.windows == 4 and result.seq_len == 128
    assert result.tokens == 4 * 127
    assert result.text.endswith("evaluation.txt") and len(result.text_sha256) == 64
    assert 5 < result.ppl_bf16 < 200  # real prose on a real model
    assert result.ppl_quant != result.ppl_bf16  # the FP8 layer changed something
    assert result.relative_increase == pytest.approx(result.ppl_quant / result.ppl_bf16 - 1)
    assert abs(result.relative_increase) < 0.02 and result.passed and result.threshold == 0.05
    assert result.layer_formats == {"fp8": 3, "bf16": 207}
    [task] = result.lm_eval
    assert task.task == "trtq_devil_definitions" and task.metric == "acc" and task.samples == 4
    assert 0.0 <= task.reference <= 1.0 and task.threshold == 0.05
    assert task.passed == (task.degradation <= 0.05)
    assert json.loads(out.read_text())["artifact"] == "eval"


@pytest.mark.slow  # `trtq eval` loads the real model
def test_gate_fails_with_exit_code_1_and_one_line(plans, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code, err = run(capsys, "--plan", str(plans["all_fp8"]), *FAST, "--max-ppl-increase", "0.01",
                    "-o", str(out))
    assert code == 1
    failure_lines = [line for line in err.splitlines() if line.startswith("trtq: eval gate failed")]
    assert len(failure_lines) == 1 and "limit 0.01%" in failure_lines[0]
    result = load_artifact(out, EvalResult)
    assert not result.passed and result.relative_increase > 0.0001 and result.threshold == 0.0001
    assert result.layer_formats == {"fp8": 210}


@pytest.mark.slow  # `trtq eval` loads the real model
def test_nvfp4_layers_use_the_reference_weights_on_cpu(plans, tmp_path, capsys):
    out = tmp_path / "eval.yaml"
    code, err = run(capsys, "--plan", str(plans["nvfp4_mlp"]), *FAST, "--max-ppl-increase", "1000",
                    "-o", str(out))
    assert code == 0, err
    result = load_artifact(out, EvalResult)
    assert result.layer_formats == {"nvfp4": 60, "bf16": 150}
    assert result.ppl_quant > result.ppl_bf16
    assert any("60 NVFP4 layers" in note and "activations NOT quantized" in note
               for note in result.metadata.notes)


@pytest.mark.parametrize("extra, needle", [
    ([], "exactly one of --plan FILE or --checkpoint DIR"),
    (["--plan", "missing.yaml"], "missing.yaml"),
    (["--plan", "PLAN", "--seq-len", "1"], "--seq-len: must be at least 2"),
    (["--plan", "PLAN", "--max-ppl-increase", "-1"], "--max-ppl-increase: must be at least 0"),
    (["--plan", "PLAN", "--text", "no-such-text.txt"], "text file not found"),
    (["--plan", "PLAN", "--lm-eval", "=3"], "empty task name"),
    (["--plan", "PLAN", "--lm-eval", "mmlu=lots"], "not a number"),
    (["--checkpoint", "no-such-dir"], "checkpoint directory not found"),
])
def test_malformed_inputs_exit_2_with_one_line(plans, capsys, extra, needle):
    argv = [str(plans["one_fp8"]) if a == "PLAN" else a for a in extra]
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("trtq: error:") and needle in err, err


def test_checkpoint_without_a_quantization_config_is_refused_in_one_line(tmp_path, capsys):
    # Scoring real checkpoints is tested in test_checkpoint.py; this one is refused before any model loads.
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "hf_quant_config.json").write_text("{}")
    code, err = run(capsys, "--checkpoint", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "no 'quantization' mapping" in err


def test_plan_for_another_model_and_evaluation_equal_to_calibration(plans, tmp_path, capsys):
    from trtq.data import CALIBRATION_PATH

    code, err = run(capsys, "--plan", str(plans["one_fp8"]), "--text", str(CALIBRATION_PATH))
    assert code == 2 and "is the calibration text" in err
    other = tmp_path / "other.yaml"
    other.write_text(plans["one_fp8"].read_text().replace("model: smollm2-135m", "model: llama-3.1-8b"))
    code, err = run(capsys, "--plan", str(other))
    assert code == 2 and "was made for model 'llama-3.1-8b'" in err
