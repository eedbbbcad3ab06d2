"""Pipeline files: the shipped examples validate; a bad file is one line on stderr and exit 2, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trtq.run.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_examples_are_valid_pipelines():
    assert {p.name for p in EXAMPLES} >= {"smollm2.yaml", "llama-3.1-8b.yaml"}
    for path in EXAMPLES:
        pipeline = load_pipeline(path)
        assert pipeline.gpus and pipeline.plan.budgets
    smollm2 = load_pipeline(ROOT / "examples" / "smollm2.yaml")
    assert smollm2.gpu_names() == ["H100-SXM", "A100-SXM-80GB", "B200"]  # registry spelling


def _minimal(**changes) -> dict:
    data = {"schema_version": 1, "model": "smollm2-135m", "gpus": [{"name": "H100"}],
            "plan": {"budgets": ["decode@16=0.5"]}, "profile": {"tokens": [16]}}
    data.update(changes)
    return data


@pytest.mark.parametrize("data, needle", [
    (_minimal(qualty={"max_ppl_increase": 2}), "qualty: Extra inputs are not permitted"),
    (_minimal(gpus=[{"name": "H900"}]), "unknown GPU 'H900'"),
    ({k: v for k, v in _minimal().items() if k != "model"}, "model: Field required"),
    (_minimal(model="no-such-model-anywhere"), "model"),
    (_minimal(schema_version=7), "schema_version 7 is not supported"),
    (_minimal(plan={"budgets": ["decode@16=fast"]}), "plan"),
    (_minimal(profile={"tokens": [1]}), "profile.tokens has no 16"),
    (_minimal(plan={"budgets": ["decode@16=0.5"], "slo": ["ttft=200ms"]}), "slo"),
    # The plan section is `trtq plan`'s own request: its checks, by option.
    (_minimal(plan={"budgets": ["decode@16=0.5"], "kv_formats": "fp8"}), "plan: --kv-formats needs --workload"),
    (_minimal(plan={"budgets": ["decode@16=0.5"], "mip_rel_gap": 2}), "plan: --mip-gap must be a number from 0"),
    (_minimal(plan={"budgets": ["decode@16=0.5"], "runtime": "trtllm@1.2"}), "runtime is set at the pipeline's top"),
    (_minimal(plan={"budgets": ["decode@16=0.5"], "pareto": 1}), "--pareto needs between 2"),
    # compute: the device options of sensitivity, quantize and eval, declared once
    (_minimal(compute={"device": "gpu"}), "not a device: 'gpu'"),
    (_minimal(compute={"dtype": "int8"}), "dtype"),
    (_minimal(compute={"sequentail": True}), "compute: ComputeSettings: unknown setting 'sequentail'"),
    (_minimal(compute={"sequential": True}, quality={"lm_eval": {"hellaswag": 2}}),
     "quality.lm_eval runs the whole model loaded: not with compute.sequential"),
    (_minimal(compute={"sequential": True}, sensitivity={"method": "autoquantize"}),
     "autoquantize (ModelOpt's search) loads the whole model: not with compute.sequential"),
])
def test_bad_pipeline_is_one_line_and_exit_2(tmp_path, data, needle):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "trtq", "run", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "engines").exists()


def test_missing_pipeline_file(tmp_path):
    done = subprocess.run([sys.executable, "-m", "trtq", "run", str(tmp_path / "nope.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "pipeline file not found" in done.stderr


def test_plan_section_is_the_plan_request():
    from trtq.run.pipeline import PlanSettings

    settings = PlanSettings(budgets=["decode@16=0.5"], workload="isl=128,osl=16", slo=["ttft=200ms"], tp=2,
                            node_limit=50)
    assert settings.slos == ["ttft=200ms"] and settings.pareto == 12   # `slo` is read as `slos`; a front by default
    request = settings.request("trtllm@1.2", pareto=None, mip_rel_gap=0.01)
    assert (request.runtime, request.pareto, request.mip_rel_gap, request.tp, request.node_limit) == (
        "trtllm@1.2", None, 0.01, 2, 50)
    assert request.workload == "isl=128,osl=16" and request.slos == ["ttft=200ms"]


def test_compute_device_the_machine_lacks_is_one_line_where_the_model_first_runs(tmp_path):
    """compute.device is checked where a stage runs the model (a Ray worker may hold the GPU): one line, exit 2."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing to refuse")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_minimal(compute={"device": "cuda", "dtype": "bfloat16"},
                                            sensitivity={"method": "weight", "formats": "bf16,fp8"},
                                            output=str(tmp_path / "out"))))
    done = subprocess.run([sys.executable, "-m", "trtq", "run", str(path)], capture_output=True, text=True,
                          timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert last.startswith("trtq: error: --device cuda: CUDA is not available"), done.stderr
    assert not (tmp_path / "out" / "sensitivity" / "all" / "sensitivity.json").exists()
