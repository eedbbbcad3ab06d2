"""SLO planning (trtq/plan/slo.py): TTFT/TPOT/KV-memory rows, the KV-cache decision, refusals."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tests.helpers.serving import WORKLOAD, llama_serving_inputs
from tests.predict.test_step_model import ONE_BLOCK, TableKernels
from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.plan import Plan
from trtq.artifacts.profile import Profile
from trtq.errors import InfeasibleError, InputError
from trtq.plan.api import PlanRequest, solve_plan
from trtq.plan.ilp import IlpProblem
from trtq.plan.slo import SloSpec, build_slo_rows, parse_slos, serving_front, solve_per_kv
from trtq.predict.kernels import Answer
from trtq.predict.step import StepModel, Workload, parse_workload
from trtq.registry import get_gpu


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path_factory.getbasetemp() / "trtq-cache"))


def test_slo_parsing():
    assert parse_slos(["ttft=500ms", "tpot=30ms"]) == SloSpec(500.0, 30.0)
    assert parse_slos(["ttft=0.5s,tpot=800us"]) == SloSpec(500.0, 0.8)
    assert parse_slos(["TPOT=12"]) == SloSpec(None, 12.0)        # a bare number is ms
    assert parse_slos([]) == SloSpec() and not parse_slos(None).given
    for bad, words in (("ttft", "bad --slo"), ("ttft=", "bad --slo"), ("e2e=5ms", "bad --slo 'e2e=5ms'"),
                       ("ttft=0ms", "positive"), ("ttft=-1ms", "positive"), ("ttft=5kg", "bad --slo"),
                       ("ttft=1e999", "positive finite")):
        with pytest.raises(InputError, match=words):
            parse_slos([bad])
    with pytest.raises(InputError, match="given twice"):
        parse_slos(["ttft=5ms", "ttft=6ms"])


def test_workload_file(tmp_path):
    good = tmp_path / "w.yaml"
    good.write_text("isl: 2048\nosl: 256\nconcurrency: 32\n")
    assert parse_workload(str(good)) == Workload(2048, 256, 32)
    assert parse_workload("isl=8,osl=4") == Workload(8, 4, None)
    for text, words in (("isl: 2048\nosl: 256\nusers: 3\n", "users"), ("isl: 2048\n", "osl"),
                        ("isl: '2048'\nosl: 2\n", "isl"), ("[1, 2\n", "not YAML"),
                        ("isl: 2048\nosl: 256\nconcurrency: 0\n", "concurrency must be >= 1")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(InputError, match=words):
            parse_workload(str(bad))


class KvTableKernels(TableKernels):
    """The toy tables with attention that reads an FP8 KV cache in 60% of the bf16 time."""

    def context_attention(self, batch, seq, heads, kv_heads, head_dim, kv_format):
        return Answer(0.1 * batch * seq / 1000 * (0.6 if kv_format == "fp8" else 1.0), "interpolated")

    def generation_attention(self, batch, seq, heads, kv_heads, head_dim, kv_format):
        return Answer(0.01 * batch * seq / 1000 * (0.6 if kv_format == "fp8" else 1.0), "interpolated")


FORMATS = ["bf16", "fp8", "nvfp4"]


def brute_force(omega, kv_omega, workload, slos, gpu):
    """Every assignment x KV format through the step model itself."""
    best = None
    names = [g.name for g in ONE_BLOCK.groups]
    for combo in itertools.product(range(len(FORMATS)), repeat=len(names)):
        for kv, kv_w in kv_omega.items():
            step = StepModel(ONE_BLOCK, {n: FORMATS[f] for n, f in zip(names, combo)}, kv, 1, KvTableKernels(), gpu)
            if step.max_concurrency(workload) < workload.concurrency:
                continue
            p = step.at_concurrency(workload.concurrency, workload)
            if (slos.ttft_ms is not None and p.ttft_ms > slos.ttft_ms) or (
                    slos.tpot_ms is not None and p.tpot_ms > slos.tpot_ms):
                continue
            total = float(sum(omega[g, f] for g, f in enumerate(combo))) + kv_w
            if best is None or total < best[0] - 1e-12:
                best = (total, combo, kv)
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("concurrency", [8, 4000])
def test_slo_rows_and_kv_decision_against_brute_force(seed, concurrency):
    """The ILP (rows from build_slo_rows, one solve per KV format) finds the brute-force optimum over
    3^4 assignments x 2 KV formats, with TTFT, TPOT and memory priced by the step model itself. At
    concurrency 4000 a bf16 KV cache does not fit the toy's 1 GiB: only FP8 KV plans exist."""
    rng = np.random.default_rng(seed)
    gpu = get_gpu("B200")
    workload = Workload(isl=1000, osl=10, concurrency=concurrency)
    omega = np.sort(rng.lognormal(0, 1, (4, 3)), axis=1)    # bf16 < fp8 < nvfp4 in quality cost
    omega[:, 0] = 0.0
    kv_omega = {"bf16": 0.0, "fp8": float(rng.uniform(0.1, 2.0))}
    # SLOs between the fastest and the all-bf16 plan, drawn per seed.
    names = [g.name for g in ONE_BLOCK.groups]
    fast = StepModel(ONE_BLOCK, {n: "nvfp4" for n in names}, "fp8", 1, KvTableKernels(), gpu).at_concurrency(
        concurrency, workload)
    slow = StepModel(ONE_BLOCK, {n: "bf16" for n in names}, "bf16", 1, KvTableKernels(), gpu).at_concurrency(
        concurrency, workload)
    u = rng.uniform(0.2, 0.8, 2)
    slos = SloSpec(fast.ttft_ms + u[0] * (slow.ttft_ms - fast.ttft_ms), fast.tpot_ms + u[1] * (slow.tpot_ms - fast.tpot_ms))
    allowed = np.ones((4, 3), dtype=bool)
    rows = [build_slo_rows(model="toy", group_names=names, formats=FORMATS, allowed=allowed, gpu=gpu, workload=workload,
                           tp=1, kv_format=kv, kv_omega=w, slos=slos, kernels=KvTableKernels(), arch=ONE_BLOCK)
            for kv, w in kv_omega.items()]
    request = PlanRequest(budgets=[], workload="isl=1000,osl=10", mip_rel_gap=0.0)
    per_kv, results, feasible = solve_per_kv(IlpProblem(omega.copy(), []), rows, request)
    expected = brute_force(omega, kv_omega, workload, slos, gpu)
    assert expected is not None     # the SLOs are above the fastest plan's values
    total, best = min(feasible)
    assert total == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
    chosen_rows, sol = per_kv[best][0], results[best]
    if concurrency == 4000:
        assert chosen_rows.kv_format == "fp8"
    # The rows' linear TTFT/TPOT of the chosen plan equal the step model's own.
    step = StepModel(ONE_BLOCK, {n: FORMATS[f] for n, f in zip(names, sol.choice)}, chosen_rows.kv_format, 1,
                     KvTableKernels(), gpu)
    p = step.at_concurrency(concurrency, workload)
    assert chosen_rows.ttft_ms(sol.choice) == pytest.approx(p.ttft_ms, rel=1e-12)
    assert chosen_rows.tpot_ms(sol.choice) == pytest.approx(p.tpot_ms, rel=1e-12)
    assert p.ttft_ms <= slos.ttft_ms and p.tpot_ms <= slos.tpot_ms
    # The serving front: each point is the least total Omega over every assignment x KV format whose
    # request time fits its limit and that meets the SLOs and memory (brute force on the rows).
    front = serving_front(per_kv=per_kv, results=results, costs=_ToyCosts(omega), chosen=(chosen_rows, sol.choice),
                          request=request, points=5)
    base = rows[0].life_ns(np.zeros(4, dtype=int))      # all-bf16 layers, bf16 KV (Omega 0)
    meets = [(r, np.array(c)) for r in rows for c in itertools.product(range(3), repeat=4)
             if all(x.coeffs[np.arange(4), c].sum() <= x.limit * (1 + 1e-9) for x in r.constraints())]
    assert len(front) == 5 and front[-1].chosen and front[-1].kv_format == chosen_rows.kv_format
    for point in front:
        fits = [omega[np.arange(4), c].sum() + r.kv_omega for r, c in meets
                if r.life_ns(c) <= point.fraction * base * (1 + 1e-9)]
        assert point.totals.sensitivity + point.kv_omega == pytest.approx(min(fits), rel=1e-9, abs=1e-12)
    assert front[0].output_tokens_per_s_per_gpu >= front[-1].output_tokens_per_s_per_gpu
    assert front[0].fraction * base == pytest.approx(min(r.life_ns(c) for r, c in meets), rel=1e-9)


class _ToyCosts:
    """The CostModel surface serving_front reads, for the toy's four groups and FORMATS."""

    def __init__(self, omega):
        self.omega, self.formats = omega, FORMATS
        self.groups = [type("Group", (), {"name": g.name}) for g in ONE_BLOCK.groups]

    def bf16_index(self) -> int:
        return 0

    def totals(self, choice):
        from trtq.artifacts.plan import Totals

        return Totals(latency_ns={}, bf16_latency_ns={}, weight_bytes=0, bf16_weight_bytes=0,
                      sensitivity=float(self.omega[np.arange(len(choice)), choice].sum()))


# ---- a real model on the real tables: Llama-3.1-8B on H100, GEMMs from a roofline profile

@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    graph, profiles, sens = llama_serving_inputs(d)
    return graph, load_artifact(profiles["H100-SXM"], Profile), sens, profiles["H100-SXM"]


def slo_plan(llama, workload=WORKLOAD, **request):
    from trtq.artifacts import input_ref

    graph, profile, sens, profile_path = llama
    return solve_plan(graph, profile, sens, get_gpu("H100-SXM"),
                      PlanRequest(budgets=[], workload=workload, **request), {"profile": input_ref(profile_path)})


def test_plan_meets_slos_and_predict_reproduces_them(llama, tmp_path):
    from trtq.predict.api import PredictRequest, predict

    plan = slo_plan(llama, slos=["ttft=300ms", "tpot=9ms"])
    s = plan.serving
    assert s.ttft_ms <= 300 and s.tpot_ms <= 9 and s.max_concurrency >= 32 and s.concurrency == 32
    assert plan.kv_format == s.kv_format and s.kv_format in s.kv_candidates
    assert set(s.kv_candidates) == {"bf16", "fp8"}
    # The chosen KV format has the least total Omega among the feasible ones.
    assert s.kv_candidates[s.kv_format] == min(s.kv_candidates.values())
    assert s.kv_candidates[s.kv_format] == pytest.approx(plan.totals.sensitivity + s.kv_omega)
    # A tight SLO forces quantized groups; the all-bf16 plan would miss it.
    assert any(g.format != "bf16" for g in plan.groups)
    path = tmp_path / "plan.yaml"
    save_artifact(plan, path)
    again = load_artifact(path, Plan)
    assert again.serving == s
    r = predict(PredictRequest(target=str(path), workload="isl=2048,osl=256,concurrency=32",
                               profile=str(llama[3])))
    assert r["kv_format"] == s.kv_format
    assert r["ttft_ms"] == pytest.approx(s.ttft_ms, rel=1e-9)
    assert r["tpot_ms"] == pytest.approx(s.tpot_ms, rel=1e-9)
    assert r["max_concurrency"] == s.max_concurrency
    # The synthetic table is method "weight": the KV Omega (a KL) is in other units, and the plan says so.
    assert any("weighs unlike quantities" in n for n in plan.notes)


def test_pareto_with_a_workload_sweeps_throughput_against_quality(llama, tmp_path):
    plan = slo_plan(llama, slos=["ttft=300ms", "tpot=9ms"], pareto=6)
    front = plan.pareto
    assert len(front) == 6 and all(p.totals is not None and p.kv_format for p in front)
    # The loose end is the plan itself (least total Omega); every point meets the SLOs.
    assert front[-1].chosen and front[-1].formats == [g.format for g in plan.groups]
    assert front[-1].kv_format == plan.kv_format
    assert front[-1].output_tokens_per_s_per_gpu == pytest.approx(plan.serving.output_tokens_per_s_per_gpu, rel=1e-9)
    for p in front:
        assert p.ttft_ms <= 300 * (1 + 1e-9) and p.tpot_ms <= 9 * (1 + 1e-9)
    totals = [p.totals.sensitivity + p.kv_omega for p in front]
    assert all(a >= b for a, b in zip(totals, totals[1:])) and totals[0] > totals[-1]
    assert front[0].output_tokens_per_s_per_gpu > front[-1].output_tokens_per_s_per_gpu
    path = tmp_path / "plan.yaml"
    save_artifact(plan, path)
    assert load_artifact(path, Plan).pareto == front


def test_looser_slo_never_costs_more_quality(llama):
    tight = slo_plan(llama, slos=["tpot=8.5ms"]).serving
    loose = slo_plan(llama, slos=["tpot=10ms"]).serving
    assert loose.kv_candidates[loose.kv_format] <= tight.kv_candidates[tight.kv_format] + 1e-12
    assert tight.tpot_ms <= 8.5 and loose.tpot_ms <= 10


def test_infeasible_slo_names_it_and_the_smallest_value_is_feasible(llama):
    with pytest.raises(InfeasibleError) as err:
        slo_plan(llama, slos=["ttft=5ms", "tpot=0.5ms"])
    message = str(err.value)
    assert "SLO ttft=5ms cannot be met" in message and "SLO tpot=0.5ms cannot be met" in message
    suggested = message.split("--slo ")[1].split(")")[0]
    assert suggested.startswith("ttft=")
    plan = slo_plan(llama, slos=[suggested])
    assert plan.serving.ttft_ms <= float(suggested.removeprefix("ttft=").removesuffix("ms"))


def test_memory_cliff_picks_fp8_kv_or_names_the_concurrency_that_fits(llama):
    # 1,000 sequences of 2,304 tokens: 302 GB of bf16 KV cache, 151 GB in fp8: neither fits an H100.
    with pytest.raises(InfeasibleError, match=r"does not fit .* at most (\d+) sequences") as err:
        slo_plan(llama, workload="isl=2048,osl=256,concurrency=1000")
    fits = int(err.value.args[0].split("concurrency=")[-1].rstrip(")"))
    plan = slo_plan(llama, workload=f"isl=2048,osl=256,concurrency={fits}")
    assert plan.serving.max_concurrency >= fits
    # Between the bf16 and the fp8 KV capacities the KV format is decided by memory: fp8.
    bf16_only = slo_plan(llama, workload="isl=2048,osl=256,concurrency=8", kv_formats="bf16").serving
    between = bf16_only.max_concurrency + 20
    plan = slo_plan(llama, workload=f"isl=2048,osl=256,concurrency={between}")
    assert plan.serving.kv_format == "fp8" and plan.serving.max_concurrency >= between


def test_cli_slo_plan_and_infeasible_one_line(llama, tmp_path):
    import subprocess
    import sys

    graph, profile, sens, profile_path = llama
    save_artifact(sens, tmp_path / "sens.json")
    base = [sys.executable, "-m", "trtq", "plan", "llama-3.1-8b", "--profile", str(profile_path),
            "--sensitivity", str(tmp_path / "sens.json"), "--gpu", "h100", "--workload",
            "isl=2048,osl=256,concurrency=32"]
    ok = subprocess.run(base + ["--slo", "ttft=300ms,tpot=9ms", "-o", str(tmp_path / "p.yaml")],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "TTFT" in ok.stdout and "KV cache" in ok.stdout
    bad = subprocess.run(base + ["--slo", "tpot=0.5ms", "-o", str(tmp_path / "q.yaml")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "SLO tpot=0.5ms cannot be met" in bad.stderr and not (tmp_path / "q.yaml").exists()


def test_workload_file_is_read_by_predict_as_by_plan(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "w.yaml"
    path.write_text("isl: 2048\nosl: 256\nconcurrency: 8\n")
    common = ["--uniform", "fp8", "--gpu", "h100", "llama-3.1-8b", "--json"]
    by_file = subprocess.run([sys.executable, "-m", "trtq", "predict", "--workload", str(path), *common],
                             capture_output=True, text=True, timeout=300)
    inline = subprocess.run([sys.executable, "-m", "trtq", "predict", "--workload", "isl=2048,osl=256,concurrency=8",
                             *common], capture_output=True, text=True, timeout=300)
    assert by_file.returncode == inline.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout)["ttft_ms"] == json.loads(inline.stdout)["ttft_ms"]
    unknown = subprocess.run([sys.executable, "-m", "trtq", "predict", "--workload", str(path), "--uniform", "fp9",
                              "--gpu", "h100", "llama-3.1-8b"], capture_output=True, text=True, timeout=300)
    from trtq.registry import FORMATS as KNOWN

    assert unknown.returncode == 2
    assert unknown.stderr.strip() == f"trtq: error: unknown format 'fp9'; known formats: {', '.join(KNOWN)}"
