"""The shared mixed-precision SmolLM2 plan (`mixed_plan`, `exported`: tests/conftest.py) quantized again with
--sequential, for the tests that compare the two checkpoints."""

from __future__ import annotations

import pytest

from tests.conftest import MIXED_CALIBRATION
from trtq.cli import main


@pytest.fixture(scope="package")
def exported_sequentially(tmp_path_factory, mixed_plan):
    """The same plan and calibration with --sequential: blocks offloaded to disk, calibrated one at a time."""
    plan, plan_path = mixed_plan
    out = tmp_path_factory.mktemp("quantize-sequential") / "engines" / "mixed"
    assert main(["quantize", "smollm2-135m", "--plan", str(plan_path), *MIXED_CALIBRATION, "--sequential",
                 "-o", str(out)]) == 0
    return plan, plan_path, out
