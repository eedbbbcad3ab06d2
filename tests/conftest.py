"""Session fixtures shared across stages: the real model is loaded once per test run.

Also three rules for the whole run:

- Its own cache. trtq caches the embedded model's GGUF -> safetensors conversion under
  TRTQ_CACHE (default ~/.cache/trtq); the tests get a fresh directory per run, so conversion and
  caching run cold in CI and never touch the user's cache. It is set before any test imports trtq
  and inherited by the `python -m trtq` subprocesses tests start. TRTQ_TEST_CACHE=DIR reuses a
  directory across runs instead (a warm cache for development).
- `slow` means something: a test that loads the real SmolLM2 model (or calibrates it with
  ModelOpt) is marked slow, automatically when it uses a fixture in REAL_MODEL_FIXTURES.
  `make test-fast` (-m "not slow") skips them; `make test` runs everything.
- It cannot drift: a test not marked slow that loads the real model in-process (directly, or
  through a CLI call such as `trtq quantize`) fails, naming the fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

# Fixtures whose use means "this test loads the real model": smollm2_model itself, and
# loads_smollm2 for fixtures or tests that load it some other way (e.g. a `trtq quantize` call).
# Fixtures that depend on one of these (smollm2_weight_sensitivity, ...) count too.
REAL_MODEL_FIXTURES = frozenset({"smollm2_model", "loads_smollm2"})

_RUN_CACHE: dict[str, object] = {}
_LOADS: list[str] = []


def pytest_configure(config):
    reuse = os.environ.get("TRTQ_TEST_CACHE")
    if reuse:
        directory, owned = reuse, False
    else:
        directory, owned = tempfile.mkdtemp(prefix="trtq-test-cache-"), True
    _RUN_CACHE.update(path=directory, owned=owned, previous=os.environ.get("TRTQ_CACHE"), started=time.time())
    os.environ["TRTQ_CACHE"] = directory

    # Count the real-model loads each test causes (successful ones: a refused load costs nothing).
    import trtq.model.zoo as zoo

    original = zoo.load_pretrained

    def counted_load_pretrained(*args, **kwargs):
        result = original(*args, **kwargs)
        _LOADS.append("load")
        return result

    counted_load_pretrained.__wrapped__ = original
    zoo.load_pretrained = counted_load_pretrained


def pytest_unconfigure(config):
    if _RUN_CACHE.get("owned"):
        shutil.rmtree(str(_RUN_CACHE["path"]), ignore_errors=True)
    if _RUN_CACHE.get("previous") is None:
        os.environ.pop("TRTQ_CACHE", None)
    elif "previous" in _RUN_CACHE:
        os.environ["TRTQ_CACHE"] = str(_RUN_CACHE["previous"])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    item.stash[_loads_before] = len(_LOADS)  # fixture set-up loads count too
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    loads = len(_LOADS) - item.stash.get(_loads_before, len(_LOADS))
    if loads and item.get_closest_marker("slow") is None:
        pytest.fail(
            f"{item.nodeid} loaded the real SmolLM2 model ({loads}x) but is not marked slow: use the "
            "smollm2_model fixture, request loads_smollm2 (from the test or the fixture that loads it), "
            "or mark it @pytest.mark.slow", pytrace=False)
    return result


_loads_before = pytest.StashKey[int]()


def run_cache_dir() -> str:
    """The per-run TRTQ_CACHE directory (what trtq.model.zoo.cache_dir() returns in this run)."""
    return str(_RUN_CACHE["path"])


def run_started() -> float:
    return float(_RUN_CACHE["started"])


@pytest.fixture(scope="session")
def loads_smollm2():
    """Request this from a test or fixture that loads the real model outside smollm2_model: it marks it slow."""
    return None


@pytest.fixture(scope="session")
def smollm2_resolved():
    from trtq.model.zoo import require_embedded_model

    return require_embedded_model()


@pytest.fixture(scope="session")
def tokenizer_dir(smollm2_resolved, loads_smollm2):
    """SmolLM2's safetensors directory, with its tokenizer (the tiny test models borrow it)."""
    from trtq.model.zoo import weights_directory

    return weights_directory(smollm2_resolved)


@pytest.fixture(scope="session")
def smollm2_graph(smollm2_resolved):
    from trtq.model.layers import build_layer_graph

    return build_layer_graph(smollm2_resolved)


# The calibration of the shared mixed-precision export (`mixed_export`) and of the runs compared with it.
MIXED_CALIBRATION = ["--calib-samples", "4", "--calib-seq-len", "128", "--seed", "3"]


@pytest.fixture(scope="session")
def mixed_plan(smollm2_graph, tmp_path_factory, loads_smollm2):
    """(plan, plan.yaml): every format in every SmolLM2 block (tests.helpers.plans.mixed_choice)."""
    from tests.helpers.plans import mixed_choice, plan_from_graph
    from trtq.artifacts import save_artifact

    plan = plan_from_graph(smollm2_graph, mixed_choice)
    return plan, save_artifact(plan, tmp_path_factory.mktemp("mixed-plan") / "plan.yaml")


@pytest.fixture(scope="session")
def mixed_export(mixed_plan, tmp_path_factory):
    """(plan, plan.yaml, engines/mixed): `trtq quantize` of the mixed plan through the CLI, once per run (about a
    minute on 2 cores: five formats calibrated in three stages, two exports). Read-only: copy to change it."""
    from trtq.cli import main

    plan, plan_path = mixed_plan
    out = tmp_path_factory.mktemp("quantize") / "engines" / "mixed"
    assert main(["quantize", "smollm2-135m", "--plan", str(plan_path), *MIXED_CALIBRATION, "-o", str(out)]) == 0
    return plan, plan_path, out


@pytest.fixture(scope="session")
def smollm2_model(smollm2_resolved):
    """(model, tokenizer): the real SmolLM2-135M in float32. Treat as read-only."""
    import torch

    from trtq.model.zoo import load_pretrained

    torch.manual_seed(0)
    return load_pretrained(smollm2_resolved)


@pytest.fixture(scope="session")
def smollm2_weight_sensitivity(smollm2_model):
    from trtq.sensitivity.api import weight_sensitivity

    return weight_sensitivity("smollm2-135m", model=smollm2_model[0])


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")
