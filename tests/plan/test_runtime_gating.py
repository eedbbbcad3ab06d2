"""The planner's candidates come from the runtime gate: what TensorRT-LLM's runtime runs on the GPU."""

from __future__ import annotations

import pytest

from tests.plan.test_planner import synthetic_sensitivity
from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan
from trtq.errors import UnknownNameError, UnsupportedError
from trtq.plan.api import PlanRequest, solve_plan
from trtq.profile.api import build_profile
from trtq.registry import get_gpu
from trtq.registry.runtimes import default_runtime_name

GPUS = ("H100-SXM", "A100-SXM-80GB", "B200", "L40S")


@pytest.fixture(scope="module")
def inputs(smollm2_graph):
    # Profiles with --runtime all cover every format some runtime runs on the GPU: one table for every runtime.
    profiles = {gpu: build_profile(smollm2_graph, "roofline", gpu, [16, 2048], launch_cost_ns=0, runtime="all")
                for gpu in GPUS}
    return smollm2_graph, profiles, synthetic_sensitivity(smollm2_graph)


def _plan(inputs, gpu, runtime=None, budget="decode@16=0.4", **kw) -> Plan:
    graph, profiles, sens = inputs
    return solve_plan(graph, profiles[gpu], sens, get_gpu(gpu), PlanRequest(budgets=[budget], runtime=runtime, **kw))


def test_b200_default_plan_has_no_int8_sq_or_awq(inputs):
    plan = _plan(inputs, "B200", budget="decode@16=0.3")
    assert plan.runtime == "trtllm@1.2"
    # fp8_block runs on B200 but trtq cannot export it: left out of the default candidates, with a note.
    assert plan.candidate_formats == ["bf16", "fp8", "nvfp4"]
    assert any(note.startswith("fp8_block left out") for note in plan.notes)
    assert {g.format for g in plan.groups} <= {"bf16", "fp8", "nvfp4"} and "nvfp4" in {g.format for g in plan.groups}
    named = _plan(inputs, "B200", budget="decode@16=0.3", formats="bf16,fp8,nvfp4,fp8_block")
    assert named.candidate_formats == ["bf16", "fp8", "nvfp4", "fp8_block"]
    legacy = _plan(inputs, "B200", "trtllm-engine@1.2", budget="decode@16=0.3")
    assert legacy.runtime == "trtllm-engine@1.2"
    assert {"int8_sq", "int4_awq", "w4a8_awq"} <= set(legacy.candidate_formats)


def test_a100_int8_sq_only_under_the_legacy_engine_runtime(inputs):
    assert _plan(inputs, "A100-SXM-80GB", budget="decode@16=0.6").candidate_formats == ["bf16", "int4_awq"]
    legacy = _plan(inputs, "A100-SXM-80GB", "trtllm-engine@1.2", budget="decode@16=0.6")
    assert legacy.candidate_formats == ["bf16", "int8_sq", "int4_awq"]
    with pytest.raises(UnsupportedError, match="format int8_sq is not supported on A100-SXM-80GB .* by trtllm@1.2"):
        _plan(inputs, "A100-SXM-80GB", formats="int8_sq")


def test_l40s_plans_w4a8(inputs):
    plan = _plan(inputs, "L40S", budget="decode@16=0.5")
    assert "w4a8_awq" in plan.candidate_formats and "int8_sq" not in plan.candidate_formats


def test_the_plan_records_its_runtime_and_round_trips(inputs, tmp_path):
    plan = _plan(inputs, "H100-SXM", "trtllm@main")
    save_artifact(plan, tmp_path / "plan.yaml")
    again = load_artifact(tmp_path / "plan.yaml", Plan)
    assert again.runtime == "trtllm@main" and again == plan
    with pytest.raises(UnknownNameError, match="unknown runtime 'trtllm@9'"):
        _plan(inputs, "H100-SXM", "trtllm@9")


def test_profile_runtime_restricts_the_formats(smollm2_graph):
    everything = build_profile(smollm2_graph, "roofline", "B200", [16], launch_cost_ns=0, runtime="all")
    assert everything.formats == ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4", "fp8_block"]
    assert any("every format some runtime" in n for n in everything.metadata.notes)
    pytorch = build_profile(smollm2_graph, "roofline", "B200", [16], launch_cost_ns=0, runtime="trtllm@1.2")
    assert pytorch.formats == ["bf16", "fp8", "nvfp4", "fp8_block"]
    # Without --runtime: the registry's default runtime (PyTorch backend), said in the metadata.
    default = build_profile(smollm2_graph, "roofline", "B200", [16], launch_cost_ns=0)
    assert default.formats == pytorch.formats
    (note,) = [n for n in default.metadata.notes if n.startswith("formats:")]
    assert f"runtime {default_runtime_name()} (pytorch backend, the default) runs on B200" in note
    with pytest.raises(UnsupportedError, match="format int4_awq is not supported on B200 .* by trtllm@1.2"):
        build_profile(smollm2_graph, "roofline", "B200", [16], "int4_awq", runtime="trtllm@1.2")
