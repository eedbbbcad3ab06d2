"""ILP speed on a 70B-class model, and GEMM-shape dedupe for every shipped config.

Llama-3.1-70B: 80 blocks x 7 linears (320 fused groups), all six formats on B200,
two latency budgets (decode@16, prefill@2048) and one memory budget, from a B200
roofline profile; sensitivities are synthetic and seeded (the solver's speed does
not depend on where Omega came from). Also times the whole `trtq plan` command for that
case as a separate process (interpreter start, imports, artifacts read, solve, plan.yaml
written), and the serving case: SLOs (TTFT, TPOT) at a workload with the KV-cache format
decided (bf16 or fp8: one ILP per KV format, transition costs in the rows), alone and with
a 32-point throughput front. Prints a table; the last line is
`single_solve_s=<median> pareto32_s=<total> plan_cmd_s=<median> ... floor_s=<median> slo_plan_s=<median>
slo_pareto32_s=<total>`.

    .venv/bin/python benchmarks/ilp_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from trtq.artifacts import load_artifact, make_metadata, save_artifact
from trtq.artifacts.profile import Profile
from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ZOO, resolve_model
from trtq.plan.api import PlanRequest, candidate_formats, pareto_front, problem_for, solve_plan
from trtq.plan.budgets import parse_budgets
from trtq.plan.costs import build_cost_model
from trtq.plan.ilp import solve
from trtq.profile.api import build_profile
from trtq.registry import FORMATS, get_gpu
from trtq.registry.runtimes import get_runtime

BUDGETS = ["decode@16=0.5", "prefill@2048=0.8"]
MEMORY_GB = 70.0
# The legacy engine runtime runs all six weight formats on B200 (the PyTorch backend runs three): the hardest ILP.
RUNTIME = "trtllm-engine@1.2"
# The serving case: SLOs between the fastest plan's and all-bf16's at this workload on one B200.
SLO_WORKLOAD, SLOS, KV_FORMATS, KV_OMEGA = "isl=2048,osl=256,concurrency=32", ["ttft=1000ms", "tpot=25ms"], "bf16,fp8", 0.5
FORMAT_SCALE = {"bf16": 1e-6, "fp8": 1e-2, "fp8_block": 8e-3, "int8_sq": 6e-3, "int4_awq": 0.2, "w4a8_awq": 0.26, "nvfp4": 0.15}


def synthetic_sensitivity(graph, seed: int = 0) -> Sensitivity:
    rng = np.random.default_rng(seed)
    rows = []
    for layer in graph.layers:
        weight = rng.lognormal(0, 1.0)
        for fmt in FORMATS.values():
            if fmt.available_for(layer.in_features):
                jitter = rng.lognormal(0, 0.3)
                omega = FORMAT_SCALE[fmt.name] * weight * jitter
                rows.append(SensitivityRow(layer=layer.name, format=fmt.name,
                                           group_size=fmt.group_size_for(layer.in_features),
                                           weight_error=omega, omega=omega))
    return Sensitivity.create(metadata=make_metadata(seed=seed), model=graph.model, method="weight",
                              formats=list(FORMATS), rows=rows, kv_cache={"fp8": KV_OMEGA})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pareto", type=int, default=32)
    args = parser.parse_args()
    console = Console(width=140)

    shapes = Table(title="Profile dedupe: unique GEMM shapes per model (fused groups), per token count")
    for col in ("model", "quantizable layers", "fused groups", "unique shapes"):
        shapes.add_column(col)
    for alias in ZOO:
        g = build_layer_graph(resolve_model(alias))
        shapes.add_row(alias, str(len(g.layers)), str(len(g.groups)), str(len(g.unique_shapes())))
    console.print(shapes)

    graph = build_layer_graph(resolve_model("llama-3.1-70b"))
    gpu = get_gpu("b200")
    profile = build_profile(graph, "roofline", gpu.name, [16, 2048], runtime=RUNTIME)
    sensitivity = synthetic_sensitivity(graph)
    request = PlanRequest(budgets=BUDGETS, memory_gb=MEMORY_GB, runtime=RUNTIME)

    formats = candidate_formats(gpu, None, get_runtime(RUNTIME))
    # The profile's runtime, not the default one: a profile covers its runtime's formats only.
    assert {f.name for f in formats} <= set(profile.formats), "the profile lacks a format of the runtime"
    budgets = parse_budgets(BUDGETS)
    costs = build_cost_model(graph, profile, sensitivity, formats, {b.point: b.tokens for b in budgets})
    problem, _ = problem_for(costs, budgets, int(MEMORY_GB * 1e9))

    solver_times, exact_times, plan_times = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        solve(problem, mip_rel_gap=request.mip_rel_gap)
        solver_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        solve(problem, mip_rel_gap=1e-6)
        exact_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        plan = solve_plan(graph, profile, sensitivity, gpu, request)
        plan_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    front = pareto_front(costs, budgets, int(MEMORY_GB * 1e9), args.pareto, "highs", request.pareto_mip_rel_gap,
                         request.pareto_time_limit, request.node_limit)
    pareto_s = time.perf_counter() - start

    command_times, command_cpu, slo_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # The serving case: the step model's tables are read once (the first plan), then timed.
        from trtq.artifacts import input_ref

        save_artifact(build_profile(graph, "roofline", gpu.name, [1, 16, 128, 2048, 4096], runtime=RUNTIME),
                      Path(tmp) / "slo.json")
        slo_profile = load_artifact(Path(tmp) / "slo.json", Profile)
        slo_request = PlanRequest(budgets=[], workload=SLO_WORKLOAD, slos=SLOS, kv_formats=KV_FORMATS,
                                  runtime=RUNTIME)
        inputs = {"profile": input_ref(Path(tmp) / "slo.json")}
        slo_plan = solve_plan(graph, slo_profile, sensitivity, gpu, slo_request, inputs)
        for _ in range(args.repeats):
            start = time.perf_counter()
            solve_plan(graph, slo_profile, sensitivity, gpu, slo_request, inputs)
            slo_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        slo_front = solve_plan(graph, slo_profile, sensitivity, gpu,
                               slo_request.model_copy(update={"pareto": args.pareto}), inputs).pareto
        slo_pareto_s = time.perf_counter() - start - statistics.median(slo_times)
        save_artifact(profile, Path(tmp) / "b200.json")
        save_artifact(sensitivity, Path(tmp) / "sens.json")
        command = [sys.executable, "-m", "trtq", "plan", "llama-3.1-70b", "--profile", str(Path(tmp) / "b200.json"),
                   "--sensitivity", str(Path(tmp) / "sens.json"), "--gpu", "b200", "--runtime", RUNTIME,
                   *[a for b in BUDGETS for a in ("--budget", b)], "--memory-gb", str(MEMORY_GB),
                   "-o", str(Path(tmp) / "plan.yaml")]
        # trtq's bytecode compiled first, as `pip install` (or any earlier run, where Python may write
        # it) leaves it; this workplace sets PYTHONDONTWRITEBYTECODE, so each process would otherwise
        # compile the ~75 modules it imports again (~0.1 s).
        import compileall

        import trtq

        compileall.compile_dir(Path(trtq.__file__).parent, quiet=1)
        # The floor no trtq change removes: an interpreter importing the libraries `trtq plan` needs. This
        # machine's speed varies about 2x through the day (a shared host); the floor, timed alongside,
        # says how fast it was during this run.
        floor = [sys.executable, "-c", "import numpy, pydantic, yaml, highspy, rich.console, rich.table"]
        floor_times = []
        for _ in range(args.repeats):
            for argv, times in ((command, command_times), (floor, floor_times)):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if argv is command:
                    # CPU time (user + sys) of the child: what the command costs when the machine is shared
                    command_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    table = Table(title=f"ILP speed: Llama-3.1-70B on B200 ({RUNTIME}), {len(graph.groups)} groups x {len(formats)} formats "
                        f"= {int(costs.allowed.sum())} binaries, budgets {', '.join(BUDGETS)}, memory {MEMORY_GB:g} GB")
    for col in ("measure", "median s", "min s", "max s", "target"):
        table.add_column(col)
    table.add_row(f"one ILP solve, model build + HiGHS, gap {request.mip_rel_gap:g} (planner default)",
                  f"{statistics.median(solver_times):.3f}", f"{min(solver_times):.3f}", f"{max(solver_times):.3f}",
                  "<= 0.5 s")
    table.add_row("one ILP solve, model build + HiGHS, gap 1e-6 (exact)", f"{statistics.median(exact_times):.3f}",
                  f"{min(exact_times):.3f}", f"{max(exact_times):.3f}", "-")
    table.add_row("whole `plan` (costs from artifacts + solve)", f"{statistics.median(plan_times):.3f}",
                  f"{min(plan_times):.3f}", f"{max(plan_times):.3f}", "-")
    table.add_row("`trtq plan` command, a separate process (70B, the budgets above)",
                  f"{statistics.median(command_times):.3f}", f"{min(command_times):.3f}", f"{max(command_times):.3f}",
                  "<= 1 s")
    table.add_row("  the same, CPU time (user + sys) of the process", f"{statistics.median(command_cpu):.3f}",
                  f"{min(command_cpu):.3f}", f"{max(command_cpu):.3f}", "-")
    table.add_row("  floor: a process importing numpy, pydantic, yaml, highspy and rich (no trtq)",
                  f"{statistics.median(floor_times):.3f}", f"{min(floor_times):.3f}", f"{max(floor_times):.3f}", "-")
    table.add_row(f"{args.pareto}-point Pareto front, gap {request.pareto_mip_rel_gap:g} per point "
                  "(incl. fastest-feasible search)", f"{pareto_s:.3f}", "-", "-", "<= 5 s")
    s = slo_plan.serving
    table.add_row(f"SLO plan: {SLO_WORKLOAD}, {' '.join(SLOS)}, KV {KV_FORMATS} (rows + one ILP per KV format)",
                  f"{statistics.median(slo_times):.3f}", f"{min(slo_times):.3f}", f"{max(slo_times):.3f}", "<= 0.5 s")
    table.add_row(f"  its {args.pareto}-point throughput front (beyond the plan)", f"{slo_pareto_s:.3f}", "-", "-",
                  "<= 5 s")
    console.print(table)
    console.print(f"SLO plan: KV {s.kv_format}, TTFT {s.ttft_ms:.1f} ms, TPOT {s.tpot_ms:.2f} ms, "
                  f"{s.output_tokens_per_s_per_gpu:.0f} output tokens/s per GPU; front from "
                  f"{slo_front[0].output_tokens_per_s_per_gpu:.0f} to {slo_front[-1].output_tokens_per_s_per_gpu:.0f}")
    feasible = [p for p in front if p.status == "optimal"]
    console.print(f"plan: {plan.solver.status}, Σ Ω {plan.totals.sensitivity:.4g}; Pareto: {len(feasible)} feasible "
                  f"points from fraction {front[0].fraction:.3f} to {front[-1].fraction:.3f}")
    print(f"single_solve_s={statistics.median(solver_times):.3f} pareto32_s={pareto_s:.3f} "
          f"plan_cmd_s={statistics.median(command_times):.3f} plan_cmd_cpu_s={statistics.median(command_cpu):.3f} "
          f"floor_s={statistics.median(floor_times):.3f} "
          f"slo_plan_s={statistics.median(slo_times):.3f} slo_pareto32_s={slo_pareto_s:.3f}")


if __name__ == "__main__":
    main()
