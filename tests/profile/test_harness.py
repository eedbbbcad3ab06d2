import itertools

import pytest

from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.profile import Profile
from trtq.profile.api import build_profile, gemm_cases
from trtq.profile.harness import GemmCase, HarnessSettings, Prepared, measure_case, summarise


class ScriptedBackend:
    """A backend whose 'kernel' takes scripted times: the harness is what is under test."""

    name = "scripted"

    def __init__(self, times):
        self.times = iter(times)
        self.flushes = 0

    def prepare(self, case):
        if case.format == "nvfp4":
            return Prepared(None, "none", "no kernel")
        return Prepared(lambda: None, "scripted kernel")

    def time_ns(self, run):
        run()
        return float(next(self.times))

    def between_repeats(self):
        self.flushes += 1


def test_statistics():
    stats = summarise([100.0, 110.0, 90.0, 100.0])
    assert stats.median_ns == 100.0 and stats.min_ns == 90.0 and stats.max_ns == 110.0 and stats.repeats == 4
    assert stats.cv == pytest.approx((50 ** 0.5) / 100)


def test_stable_row_stops_at_the_target_time_and_flushes_every_run():
    backend = ScriptedBackend(itertools.repeat(1000.0))
    settings = HarnessSettings(warmup=2, min_repeats=5, max_repeats=100, target_total_ns=10_000, max_cv=0.1)
    row = measure_case(backend, GemmCase(8, 8, 1, "bf16"), settings)
    assert row.status == "ok" and row.latency_ns == 1000.0 and row.repeats == 10 and row.cv == 0.0
    assert backend.flushes == 2 + 10


def test_noisy_row_is_remeasured_then_flagged():
    noisy = itertools.cycle([100.0, 300.0])
    settings = HarnessSettings(warmup=0, min_repeats=4, max_repeats=8, target_total_ns=1, max_cv=0.1)
    row = measure_case(ScriptedBackend(noisy), GemmCase(8, 8, 1, "bf16"), settings)
    assert row.status == "noisy" and "after re-measuring" in row.reason
    assert row.repeats == 8 and "first_attempt_cv" in row.details


def test_noisy_first_attempt_that_settles_is_ok():
    times = [100.0, 300.0, 100.0, 300.0] + [200.0] * 100
    settings = HarnessSettings(warmup=0, min_repeats=4, max_repeats=50, target_total_ns=1, max_cv=0.1)
    row = measure_case(ScriptedBackend(times), GemmCase(8, 8, 1, "bf16"), settings)
    assert row.status == "ok" and row.latency_ns == 200.0


def test_unsupported_row_has_reason_and_no_number():
    row = measure_case(ScriptedBackend([]), GemmCase(8, 16, 1, "nvfp4"), HarnessSettings())
    assert row.status == "unsupported" and row.latency_ns is None and row.reason == "no kernel"


def test_cases_dedupe_shapes(smollm2_graph):
    cases = gemm_cases(smollm2_graph, [1, 16], ["bf16", "fp8"])
    assert len(cases) == len(smollm2_graph.unique_shapes()) * 2 * 2 == 16


def test_cpu_backend_measures_real_kernels_and_round_trips(smollm2_graph, tmp_path):
    profile = build_profile(smollm2_graph, "cpu", None, [1, 4], formats="int8_sq,int4_awq,nvfp4",
                            harness={"warmup": 1, "min_repeats": 3, "max_repeats": 5, "target_total_ns": 1})
    assert profile.backend == "cpu" and profile.launch_cost_ns == 0
    by_format = {}
    for row in profile.rows:
        by_format.setdefault(row.format, []).append(row)
    assert {"bf16", "int8_sq", "int4_awq", "nvfp4"} == set(by_format)
    for fmt in ("bf16", "int8_sq", "int4_awq"):
        for row in by_format[fmt]:
            assert row.latency_ns > 0 and row.repeats >= 3 and row.min_ns <= row.latency_ns <= row.max_ns
    assert by_format["int4_awq"][0].method.startswith("aten._weight_int4pack_mm_for_cpu group 64")
    assert all(r.status == "unsupported" and "no CPU kernel" in r.reason for r in by_format["nvfp4"])
    assert profile.device["device"] == "cpu" and "harness" in profile.settings
    path = save_artifact(profile, tmp_path / "cpu.json")
    assert load_artifact(path, Profile) == profile
