"""`trtq eval` end to end on the real SmolLM2: the gate's verdict, its exit code, its artifact."""

from __future__ import annotations

import json

import pytest

from tests.helpers.plans import plan_from_graph
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
    all_nvfp4 = plan_from_graph(smollm2_graph, lambda i, name, kind: "nvfp4")
    paths = {}
    for name, plan in {"one_fp8": one_fp8, "all_fp8": all_fp8, "nvfp4_mlp": nvfp4_mlp, "all_nvfp4": all_nvfp4}.items():
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
    assert failure_lines[0].startswith("trtq: eval gate failed: FAIL (perplexity): ")
    result = load_artifact(out, EvalResult)
    assert not result.passed and result.relative_increase > 0.0001 and result.threshold == 0.0001
    assert result.layer_formats == {"fp8": 210}


@pytest.mark.slow  # `trtq eval` loads the real model
def test_lm_eval_degradation_fails_the_gate_alone(plans, tmp_path, capsys):
    """Every layer in NVFP4 (weights only, on CPU): the task accuracy falls past its limit while the
    perplexity bound is set out of reach, so the lm-eval check alone fails the gate."""
    out = tmp_path / "eval.json"
    code, err = run(capsys, "--plan", str(plans["all_nvfp4"]), *FAST, "--max-ppl-increase", "100000",
                    "--lm-eval", "trtq_devil_definitions=5", "--lm-eval-limit", "16", "-o", str(out))
    assert code == 1, err
    result = load_artifact(out, EvalResult)
    [task] = result.lm_eval
    assert task.samples == 16 and task.quantized < task.reference
    assert task.degradation == pytest.approx((task.reference - task.quantized) / task.reference)
    assert task.degradation > 0.05 and task.passed is False
    assert result.relative_increase <= result.threshold == 1000 and not result.passed
    failure_lines = [line for line in err.splitlines() if line.startswith("trtq: eval gate failed")]
    assert len(failure_lines) == 1, err
    # The reason is the task alone: the perplexity part passed and the line says so by omission.
    assert failure_lines[0].startswith("trtq: eval gate failed: FAIL (trtq_devil_definitions): "), err


def test_verdict_names_each_check_that_failed():
    from trtq.artifacts import make_metadata
    from trtq.artifacts.eval import TaskResult
    from trtq.eval.gate import verdict

    def result(increase, *tasks):
        lm_eval = [TaskResult(task=name, metric="acc", reference=0.5, quantized=0.5 * (1 - drop), degradation=drop,
                              threshold=0.05, passed=drop <= 0.05, samples=16) for name, drop in tasks]
        return EvalResult(artifact="eval", schema_version=EvalResult.SCHEMA_VERSION, metadata=make_metadata(),
                          model="m", text="t.txt", seq_len=128, ppl_bf16=20.0, ppl_quant=20.0 * (1 + increase),
                          relative_increase=increase, threshold=0.05,
                          passed=increase <= 0.05 and all(t.passed for t in lm_eval), lm_eval=lm_eval)

    assert verdict(result(0.01, ("a", 0.0))).startswith("PASS: perplexity 20.000 -> 20.200 (+1.00%, limit 5%)")
    assert verdict(result(0.01, ("a", 0.5), ("b", 0.01))).startswith("FAIL (a): ")
    assert "a acc 0.5000 -> 0.2500 (-50.00%, limit -5%)" in verdict(result(0.01, ("a", 0.5)))
    assert verdict(result(0.2, ("a", 0.5), ("b", 0.5))).startswith("FAIL (perplexity, a, b): ")
    assert verdict(result(0.2)).startswith("FAIL (perplexity): ")


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
