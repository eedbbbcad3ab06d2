"""The test run's own rules (tests/conftest.py): its own trtq cache, and an honest `slow` marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_MODEL_FIXTURES, run_cache_dir, run_started

ROOT = Path(__file__).resolve().parents[1]


def test_the_run_has_its_own_trtq_cache():
    from trtq.model.zoo import cache_dir

    user_cache = Path.home() / ".cache" / "trtq"
    assert cache_dir() == Path(run_cache_dir()) and cache_dir() != user_cache
    assert user_cache.resolve() not in [cache_dir().resolve(), *cache_dir().resolve().parents]
    if "TRTQ_TEST_CACHE" not in os.environ:
        assert Path(run_cache_dir()).name.startswith("trtq-test-cache-")
    # Subprocesses (`python -m trtq ...` in tests) see the same directory.
    out = subprocess.run([sys.executable, "-c", "from trtq.model.zoo import cache_dir; print(cache_dir())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == run_cache_dir()


def test_the_model_was_converted_in_this_run(smollm2_model):
    """The GGUF -> safetensors conversion ran in this run, into this run's cache (cold, not the user's copy)."""
    if "TRTQ_TEST_CACHE" in os.environ:
        pytest.skip("TRTQ_TEST_CACHE reuses a warm cache on purpose")
    converted = list((Path(run_cache_dir()) / "models").glob("*/model.safetensors"))
    assert len(converted) == 1
    assert converted[0].stat().st_mtime >= run_started()


def _collected(*args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    return {line.strip() for line in result.stdout.splitlines() if "::" in line}


def test_slow_marks_the_real_model_tests_and_only_those():
    files = ["tests/eval/test_gate.py", "tests/eval/test_checkpoint.py", "tests/sensitivity/test_fisher.py",
             "tests/sensitivity/test_quantizers.py"]
    slow = _collected("-m", "slow", *files)
    fast = _collected("-m", "not slow", *files)
    assert slow and fast and not slow & fast
    # Real-model tests (unmarked before): the eval gate, Fisher on SmolLM2, the quantizers on its layers.
    for node in ("tests/eval/test_gate.py::test_gate_fails_with_exit_code_1_and_one_line",
                 "tests/sensitivity/test_fisher.py::test_fisher_method_on_the_real_model_fills_the_shared_table",
                 "tests/sensitivity/test_quantizers.py::test_reference_matches_modelopt_weight_fake_quant_on_every_layer[fp8]",
                 "tests/eval/test_checkpoint.py::test_eval_checkpoint_scores_the_artifact"):
        assert node in slow, node
    # Unit tests on hand-made tensors (marked slow before): fast.
    for node in ("tests/eval/test_checkpoint.py::test_nvfp4_decodes_as_modelopt_and_the_trtq_reference",
                 "tests/eval/test_checkpoint.py::test_missing_directory_and_directory_without_quant_config",
                 "tests/sensitivity/test_quantizers.py::test_nvfp4_hand_computed_block",
                 "tests/eval/test_gate.py::test_checkpoint_without_a_quantization_config_is_refused_in_one_line"):
        assert node in fast, node


def test_the_marking_fixtures_exist():
    import tests.conftest as conftest

    for name in REAL_MODEL_FIXTURES:
        assert callable(getattr(conftest, name)), name
