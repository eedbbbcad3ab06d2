"""One mixed-precision SmolLM2 plan quantized through the CLI, whole-model (`exported`) and block by block
(`exported_sequentially`), shared by the test modules that read the checkpoints back."""

from __future__ import annotations

import re

import pytest

from tests.helpers.plans import plan_from_graph
from trtq.artifacts import save_artifact
from trtq.cli import main

FORMATS = ("fp8", "int8_sq", "int4_awq", "w4a8_awq", "bf16")
KIND_OFFSET = {"qkv": 0, "o_proj": 1, "gate_up": 2, "down_proj": 3}
CALIBRATION = ["--calib-samples", "4", "--calib-seq-len", "128", "--seed", "3"]


def choose(index: int, name: str, kind: str) -> str:
    """Every format in every block, each kind on another one block by block."""
    block = int(re.search(r"layers\.(\d+)\.", name).group(1))
    return FORMATS[(block + KIND_OFFSET[kind]) % len(FORMATS)]


@pytest.fixture(scope="package")
def mixed_plan(tmp_path_factory, loads_smollm2):
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import require_embedded_model

    plan = plan_from_graph(build_layer_graph(require_embedded_model()), choose)
    plan_path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    save_artifact(plan, plan_path)
    return plan, plan_path


@pytest.fixture(scope="package")
def exported(tmp_path_factory, mixed_plan):
    """About a minute on 2 cores: model load, five formats calibrated in three stages, two exports."""
    plan, plan_path = mixed_plan
    out = tmp_path_factory.mktemp("quantize") / "engines" / "mixed"
    assert main(["quantize", "smollm2-135m", "--plan", str(plan_path), *CALIBRATION, "-o", str(out)]) == 0
    return plan, plan_path, out


@pytest.fixture(scope="package")
def exported_sequentially(tmp_path_factory, mixed_plan):
    """The same plan and calibration with --sequential: blocks offloaded to disk, calibrated one at a time."""
    plan, plan_path = mixed_plan
    out = tmp_path_factory.mktemp("quantize-sequential") / "engines" / "mixed"
    assert main(["quantize", "smollm2-135m", "--plan", str(plan_path), *CALIBRATION, "--sequential",
                 "-o", str(out)]) == 0
    return plan, plan_path, out
