"""Artifacts for the report tests: three SmolLM2-135M plans (H100, A100, B200), a bench table, an eval."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtq.artifacts.eval import EvalResult
from trtq.artifacts.io import make_metadata, save_artifact, sha256_file
from tests.helpers.synthetic_reports import MODEL, build_sensitivity, write_bench, write_plans


@pytest.fixture(scope="session")
def plan_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("plans")
    write_plans(directory)
    return directory


@pytest.fixture(scope="session")
def plan_paths(plan_dir) -> dict[str, Path]:
    return {name: plan_dir / f"plan-{name.lower()}.yaml" for name in ("H100-SXM", "A100-SXM-80GB", "B200")}


@pytest.fixture(scope="session")
def bench_table(plan_paths, tmp_path_factory) -> Path:
    speeds = {"H100-SXM": 1.0, "A100-SXM-80GB": 0.6, "B200": 1.8}
    entries = [(sha256_file(p), gpu, f"engine-{gpu.split('-')[0].lower()}", speeds[gpu]) for gpu, p in plan_paths.items()]
    return write_bench(tmp_path_factory.mktemp("bench") / "bench.parquet", entries)


@pytest.fixture(scope="session")
def sensitivity_path(plan_paths, tmp_path_factory) -> Path:
    from trtq.artifacts.io import load_artifact
    from trtq.artifacts.plan import Plan

    plan = load_artifact(plan_paths["H100-SXM"], Plan)
    return save_artifact(build_sensitivity(plan), tmp_path_factory.mktemp("sens") / "sensitivity.json")


@pytest.fixture(scope="session")
def eval_path(plan_paths, tmp_path_factory) -> Path:
    result = EvalResult(
        artifact="eval", schema_version=1, metadata=make_metadata(), model=MODEL,
        plan_sha256=sha256_file(plan_paths["H100-SXM"]), text="GPL-3.0 licence text", seq_len=512,
        ppl_bf16=23.61, ppl_quant=24.38, relative_increase=24.38 / 23.61 - 1, threshold=0.05, passed=True,
    )
    return save_artifact(result, tmp_path_factory.mktemp("eval") / "eval.json")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, driven over DevTools (tests/report/browser.py); skips with the reason without it."""
    from tests.report.browser import find_chromium

    pytest.importorskip("websockets", reason="the Chromium test drives DevTools with the websockets package")
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed: run `bash scripts/ensure-chromium.sh` (Debian: apt-get install chromium)")
    return path
