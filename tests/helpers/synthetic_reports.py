"""Realistic plan, sensitivity, eval and bench artifacts for SmolLM2-135M on three GPUs.

Latencies come from a small roofline over the registry's datasheet numbers, Ω from a
seeded per-layer model where 4-bit costs more than 8-bit and the first and last blocks
are the most sensitive; the Pareto sweep is a greedy knapsack. Not the planner: only
numbers with the shape and magnitude the report has to draw.
"""

from __future__ import annotations

import math
import random
import zlib
from pathlib import Path

from trtq.artifacts.io import make_metadata, save_artifact
from trtq.artifacts.plan import (
    Budget,
    FormatCost,
    GpuFacts,
    GroupChoice,
    ParetoPoint,
    Plan,
    SolverInfo,
    Totals,
)
from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
from trtq.registry import get_format, get_gpu

MODEL = "smollm2-135m"
BLOCKS = 30
HIDDEN, INTERMEDIATE, KV = 576, 1536, 192
LAUNCH_NS = 150.0  # with CUDA graphs; 3 µs launches would swamp these small GEMMs
FIXED_BYTES = 49152 * 576 * 2 + 61 * 576 * 2
POINTS = {"decode@16": ("decode", 16), "prefill@2048": ("prefill", 2048)}
_BASE_OMEGA = {"bf16": 0.0, "fp8": 0.02, "int8_sq": 0.035, "w4a8_awq": 0.30, "int4_awq": 0.26, "nvfp4": 0.38,
               "fp8_block": 0.015}


def _groups(name_prefix: str = "model.layers"):
    for b in range(BLOCKS):
        att, mlp = f"{name_prefix}.{b}.self_attn", f"{name_prefix}.{b}.mlp"
        yield b, f"{att}.qkv", "qkv", [f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"], HIDDEN, HIDDEN + 2 * KV
        yield b, f"{att}.o_proj", "o_proj", [f"{att}.o_proj"], HIDDEN, HIDDEN
        yield b, f"{mlp}.gate_up", "gate_up", [f"{mlp}.gate_proj", f"{mlp}.up_proj"], HIDDEN, 2 * INTERMEDIATE
        yield b, f"{mlp}.down_proj", "down_proj", [f"{mlp}.down_proj"], INTERMEDIATE, HIDDEN


def _latency_ns(gpu, fmt, n: int, k: int, m: int) -> float:
    flops = 2.0 * m * n * k
    nbytes = fmt.weight_bytes(n, k) + fmt.activation_bytes(m, k) + m * n * 2
    compute = flops / (gpu.peak_flops[fmt.compute] * 0.75)
    memory = nbytes / (gpu.hbm_bandwidth_bytes_per_s * 0.85)
    return max(compute, memory) * 1e9 + LAUNCH_NS


def _omega(fmt_name: str, block: int, kind: str, rng: random.Random) -> float:
    edge = 3.0 if block in (0, 1, BLOCKS - 1) else 1.0
    kind_factor = {"qkv": 1.0, "o_proj": 0.6, "gate_up": 0.8, "down_proj": 1.6}[kind]
    return _BASE_OMEGA[fmt_name] * edge * kind_factor * math.exp(rng.gauss(0.0, 0.35))


def _totals(groups: list[GroupChoice], formats: list[str]) -> Totals:
    latency = {p: sum(g.costs[f].latency_ns[p] for g, f in zip(groups, formats)) for p in POINTS}
    bf16 = {p: sum(g.costs["bf16"].latency_ns[p] for g in groups) for p in POINTS}
    weights = sum(g.costs[f].weight_bytes for g, f in zip(groups, formats))
    bf16_weights = sum(g.costs["bf16"].weight_bytes for g in groups)
    return Totals(
        latency_ns=latency,
        bf16_latency_ns=bf16,
        weight_bytes=weights + FIXED_BYTES,
        bf16_weight_bytes=bf16_weights + FIXED_BYTES,
        sensitivity=sum(g.costs[f].omega for g, f in zip(groups, formats)),
    )


def _lagrangian(groups: list[GroupChoice], fraction: float, point: str) -> list[str] | None:
    """min ΣΩ s.t. Σ latency <= fraction × bf16, by bisection on the price of a nanosecond."""
    limit = fraction * sum(g.costs["bf16"].latency_ns[point] for g in groups)

    def pick(price: float) -> list[str]:
        return [min(g.costs, key=lambda f: (g.costs[f].omega + price * g.costs[f].latency_ns[point], f)) for g in groups]

    def latency(formats: list[str]) -> float:
        return sum(g.costs[f].latency_ns[point] for g, f in zip(groups, formats))

    if latency(pick(1e6)) > limit:
        return None
    low, high = 1e-12, 1e6
    for _ in range(200):
        mid = math.sqrt(low * high)
        if latency(pick(mid)) <= limit:
            high = mid
        else:
            low = mid
    return pick(high)


def build_plan(gpu_name: str, fraction: float = 0.6, seed: int = 0, model: str = MODEL,
               name_prefix: str = "model.layers", notes: list[str] | None = None) -> Plan:
    gpu = get_gpu(gpu_name)
    candidates = [f.name for f in gpu.formats]
    groups: list[GroupChoice] = []
    omega_rng_state = {}
    for block, name, kind, members, k, n in _groups(name_prefix):
        costs = {}
        for fname in candidates:
            fmt = get_format(fname)
            if not fmt.available_for(k):
                continue
            # The same Ω for a layer and format on every GPU: it is a property of the weights.
            key = (block, kind, fname)
            if key not in omega_rng_state:
                omega_rng_state[key] = _omega(fname, block, kind, random.Random(zlib.crc32(repr(key).encode()) + seed))
            costs[fname] = FormatCost(
                omega=omega_rng_state[key],
                weight_bytes=fmt.weight_bytes(n, k, fmt.group_size_for(k)),
                latency_ns={p: _latency_ns(gpu, fmt, n, k, m) for p, (_, m) in POINTS.items()},
            )
        groups.append(GroupChoice(
            group=name, kind=kind, block=block, members=members, in_features=k, out_features=n,
            format="bf16", group_size=None, costs=costs,
        ))
    pareto: list[ParetoPoint] = []
    chosen_formats = None
    for frac in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25):
        formats = _lagrangian(groups, frac, "decode@16")
        if formats is None:
            pareto.append(ParetoPoint(fraction=frac, status="infeasible"))
            continue
        is_chosen = abs(frac - fraction) < 1e-9
        pareto.append(ParetoPoint(fraction=frac, status="optimal", totals=_totals(groups, formats),
                                  formats=formats, chosen=is_chosen))
        if is_chosen:
            chosen_formats = formats
    assert chosen_formats is not None, f"fraction {fraction} infeasible on {gpu.name}"
    for g, f in zip(groups, chosen_formats):
        g.format = f
        g.group_size = get_format(f).group_size_for(g.in_features)
    totals = _totals(groups, chosen_formats)
    budgets = [
        Budget(point="decode@16", phase="decode", tokens=16, spec=f"decode@16={fraction:g}", fraction=fraction,
               limit_ns=fraction * totals.bf16_latency_ns["decode@16"], bf16_ns=totals.bf16_latency_ns["decode@16"]),
    ]
    return Plan.create(
        metadata=make_metadata(seed=seed, notes=list(notes or [])),
        model=model, gpu=gpu.name, profile_backend="roofline", launch_cost_ns=LAUNCH_NS,
        sensitivity_method="weight", budgets=budgets, memory_budget_bytes=None,
        candidate_formats=candidates, fixed_parameter_bytes=FIXED_BYTES,
        solver=SolverInfo(name="HiGHS", version="1.7.2", status="optimal", solve_time_s=0.41,
                          objective=totals.sensitivity, mip_rel_gap=0.0),
        groups=groups, totals=totals, pareto=pareto, notes=list(notes or []),
        gpu_facts=GpuFacts.model_validate(gpu.model_dump(include=set(GpuFacts.model_fields))),
    )


def build_sensitivity(plan: Plan) -> Sensitivity:
    rows = []
    for g in plan.groups:
        for member in g.members:
            for fname, cost in g.costs.items():
                rows.append(SensitivityRow(layer=member, format=fname, group_size=get_format(fname).group_size_for(g.in_features),
                                           weight_error=cost.omega * 10, omega=cost.omega / len(g.members)))
    return Sensitivity.create(metadata=make_metadata(), model=plan.model,
                       method="weight", formats=list(plan.candidate_formats), rows=rows)


def write_plans(directory: Path, gpus=("H100-SXM", "A100-SXM-80GB", "B200")) -> list[Path]:
    paths = []
    for gpu in gpus:
        plan = build_plan(gpu)
        paths.append(save_artifact(plan, directory / f"plan-{get_gpu(gpu).name.lower()}.yaml"))
    return paths


def bench_frame(plan_sha: str, gpu: str, engine: str, speed: float = 1.0, run_id: str = "run-1"):
    """A tidy bench table as `trtq bench` writes it: one row per metric and statistic."""
    rows = []
    for c in (1, 2, 4, 8, 16, 32, 64):
        itl = (2.1e6 + 0.09e6 * c) / speed
        ttft = (9e6 + 1.4e6 * c) / speed
        req = ttft + 255 * itl
        for stat, mult in (("avg", 1.0), ("p50", 0.97), ("p90", 1.25), ("p99", 1.6)):
            rows += [
                ("time_to_first_token", stat, ttft * mult, "ns"),
                ("inter_token_latency", stat, itl * mult, "ns"),
                ("request_latency", stat, req * mult, "ns"),
            ]
        rows += [
            ("output_token_throughput", "avg", c * 1e9 / itl * 0.93, "tokens/s"),
            ("output_token_throughput_per_user", "avg", 1e9 / itl, "tokens/s/user"),
            ("request_throughput", "avg", c * 1e9 / req, "requests/s"),
        ]
        frame_rows = [
            dict(run_id=run_id, tool="aiperf", tool_version="0.13.0", model=MODEL, engine=engine,
                 plan_sha256=plan_sha, gpu=gpu, date="2026-11-27T10:00:00+00:00", concurrency=c,
                 isl=512, osl=256, metric=m, statistic=s, value=v, unit=u,
                 artifact_dir=f"results/{run_id}/c{c}")
            for m, s, v, u in rows
        ]
        rows = []
        yield from frame_rows


def write_bench(path: Path, entries) -> Path:
    """entries: (plan_sha, gpu, engine, speed) tuples -> one tidy table (CSV or parquet by suffix)."""
    import pandas as pd

    frame = pd.DataFrame([r for i, e in enumerate(entries) for r in bench_frame(*e, run_id=f"run-{i}")])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
