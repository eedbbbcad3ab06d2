"""The plan stage's settings, declared once: `trtq plan`'s options and `solve_plan`'s request.

Light on purpose (pydantic and the budget parser): `trtq plan --help` reads it without the solver.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import field_validator, model_validator

from trtq.errors import InputError
from trtq.plan.budgets import parse_budgets, parse_memory_gb
from trtq.settings import Request, checked_workload, setting

# A Pareto front of more points than this is no longer a front to choose from.
MAX_PARETO_POINTS = 1000
# A deterministic cap on one solve's work (branch-and-bound nodes): the same inputs stop at
# the same node on any machine. Llama-3.1-70B on B200 at --mip-gap 0 needs ~140.
DEFAULT_NODE_LIMIT = 100_000


class PlanRequest(Request):
    budgets: list[str] = setting(
        [],
        "latency budget: decode@16=0.6 (fraction of all-bf16) or prefill@2048=12ms; repeatable",
        flag="--budget",
        metavar="PHASE@TOKENS=VALUE",
    )
    memory_gb: float | None = setting(None, "weight-memory budget in GB (1e9 bytes), all weights", parse=float)
    pareto: int | None = setting(None, "also sweep N >= 2 budget fractions (Pareto front)", metavar="N", parse=int)
    formats: str | None = setting(None, "restrict the candidate formats (comma-separated)")
    runtime: str | None = setting(
        None,
        "TensorRT-LLM runtime the plan is for (see `trtq formats --runtime`; default: the release docker/ "
        "pins, PyTorch backend); trtllm-engine@1.2 = legacy engines with INT8-SQ",
        metavar="NAME@VERSION",
    )
    # Serving workload and SLOs (trtq/plan/slo.py): the KV cache must fit and the SLOs hold at the workload.
    workload: str | None = setting(
        None,
        "serving workload (or a YAML/JSON file with isl, osl, concurrency): the plan must fit its KV cache in "
        "GPU memory and meet --slo at it (the step model of `trtq predict`)",
        metavar="isl=N,osl=N[,concurrency=N] | FILE",
    )
    slos: list[str] = setting(
        [],
        "service-level objective at --workload: ttft=500ms, tpot=30ms (or both, comma-separated); repeatable",
        flag="--slo",
        metavar="ttft=MS|tpot=MS",
    )
    kv_formats: str | None = setting(
        None,
        "KV-cache formats to choose among with --workload (default: bf16 and those the sensitivity table "
        "measured, where the runtime runs them)",
        metavar="LIST",
    )
    tp: int = setting(1, "tensor-parallel size for --workload", parse=int)
    solver: Literal["highs", "cbc"] = setting("highs", "the ILP solver")
    # HiGHS stops once the plan's sum of Omega is proven within 0.1% of the optimum: the
    # sensitivity estimates are noisier than that, and proving the last 0.1% on a 70B model
    # costs 4x the time. --mip-gap 0 asks for the exact optimum.
    mip_rel_gap: float = setting(
        1e-3, "relative optimality gap of the ILP (0 = exact optimum)", flag="--mip-gap", metavar="GAP", parse=float
    )
    node_limit: int | None = setting(
        DEFAULT_NODE_LIMIT,
        "stop the solver after N branch-and-bound nodes with its best plan and the gap it proved (deterministic)",
        metavar="N",
        parse=int,
    )
    # No wall-clock limit by default: a time limit makes the plan depend on the machine's
    # speed. An explicit one is honoured, and a plan it cut short says so (status time_limit).
    time_limit_s: float | None = setting(
        None,
        "stop the solver after S seconds with its best plan and the gap it proved (default: none; a time "
        "limit makes the plan depend on the machine's speed, and the plan says so)",
        flag="--time-limit",
        metavar="S",
        parse=float,
    )
    # The front is for choosing, and the chosen plan is solved at mip_rel_gap: each Pareto point
    # stops at 0.5% (sum of Omega within 0.3% of the 0.1% solutions on a 70B, at 2.3x the speed).
    pareto_mip_rel_gap: float = setting(5e-3, "relative optimality gap of each Pareto point")
    pareto_time_limit_s: float | None = setting(None, "time limit of each Pareto point (default: time_limit_s)")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, budgets: list[str]) -> list[str]:
        parse_budgets(budgets)  # each one well-formed; at least one unless --workload (_serving)
        return budgets

    @field_validator("slos")
    @classmethod
    def _slos(cls, slos: list[str]) -> list[str]:
        from trtq.plan.slo import parse_slos

        parse_slos(slos)
        return slos

    _workload = field_validator("workload")(checked_workload)

    @field_validator("tp", mode="before")
    @classmethod
    def _tp(cls, tp: object) -> object:
        if isinstance(tp, bool) or not isinstance(tp, int) or not 1 <= tp <= 64:
            raise ValueError(f"--tp must be a whole number from 1 to 64, got {tp}")
        return tp

    @model_validator(mode="after")
    def _serving(self) -> PlanRequest:
        """The options that only mean something together with --workload, and a goal to plan for."""
        from trtq.plan.slo import parse_slos

        if parse_slos(self.slos).given and not self.workload:
            raise InputError("--slo needs --workload isl=N,osl=N[,concurrency=N]: TTFT and TPOT depend on it")
        if self.kv_formats and not self.workload:
            raise InputError("--kv-formats needs --workload: the KV cache is sized by the workload")
        if not self.budgets and not self.workload:
            raise InputError("give at least one --budget, e.g. --budget decode@16=0.6, or --workload with --slo")
        return self

    @field_validator("memory_gb")
    @classmethod
    def _memory(cls, memory_gb: float | None) -> float | None:
        parse_memory_gb(memory_gb)
        return memory_gb

    @field_validator("pareto", mode="before")
    @classmethod
    def _pareto(cls, pareto: object) -> object:
        if pareto is not None and (
            isinstance(pareto, bool) or not isinstance(pareto, int) or not 2 <= pareto <= MAX_PARETO_POINTS
        ):
            raise ValueError(
                f"--pareto needs between 2 and {MAX_PARETO_POINTS} points, got {pareto} (leave it out for no front)"
            )
        return pareto

    @field_validator("mip_rel_gap", "pareto_mip_rel_gap", mode="before")
    @classmethod
    def _gap(cls, gap: object, info) -> object:
        option = "--mip-gap" if info.field_name == "mip_rel_gap" else "the Pareto gap"
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) or not 0 <= gap < 1:
            raise ValueError(f"{option} must be a number from 0 (exact) to below 1, got {gap}")
        return gap

    @field_validator("time_limit_s", "pareto_time_limit_s", mode="before")
    @classmethod
    def _time_limit(cls, limit: object, info) -> object:
        option = "--time-limit" if info.field_name == "time_limit_s" else "the Pareto time limit"
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0
        ):
            raise ValueError(
                f"{option} must be a positive finite number of seconds, got {limit} (leave it out for no time limit)"
            )
        return limit

    @field_validator("node_limit", mode="before")
    @classmethod
    def _node_limit(cls, limit: object) -> object:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"--node-limit must be a positive whole number of nodes, got {limit}")
        return limit

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, runtime: str | None) -> str | None:
        from trtq.registry.runtimes import get_runtime

        get_runtime(runtime)  # an unknown runtime is refused before any file is read
        return runtime

    @property
    def pareto_time_limit(self) -> float | None:
        return self.pareto_time_limit_s if self.pareto_time_limit_s is not None else self.time_limit_s
