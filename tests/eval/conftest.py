"""The eval tests' shared runs: `trtq eval --plan` of the shared mixed-precision plan (tests/conftest.py), which
the checkpoint tests compare the export with and the block-sequential tests compare their own run with."""

from __future__ import annotations

import pytest

from tests.conftest import MIXED_CALIBRATION
from trtq.artifacts import load_artifact
from trtq.artifacts.eval import EvalResult
from trtq.cli import main

# 4 windows of 128 tokens: enough to tell the formats apart on SmolLM2, quick on a CPU.
FAST_EVAL = ["--seq-len", "128", "--windows", "4", "--max-ppl-increase", "1000"]


@pytest.fixture(scope="package")
def plan_eval(mixed_plan, tmp_path_factory) -> EvalResult:
    """`trtq eval --plan` of the mixed plan, calibrated as its export was (ModelOpt fake quantization)."""
    _, plan_path = mixed_plan
    out = tmp_path_factory.mktemp("plan-eval") / "eval.json"
    assert main(["eval", "smollm2-135m", "--plan", str(plan_path), *FAST_EVAL, *MIXED_CALIBRATION, "-o", str(out)]) == 0
    return load_artifact(out, EvalResult)
