"""What `trtq run` adds to the artifact tree: each GPU's front of candidate plans, and the gated selection."""

from __future__ import annotations

from typing import ClassVar, Literal

from trtq.artifacts.io import Artifact, StrictModel


class FrontCandidate(StrictModel):
    """One distinct plan of a GPU's Pareto front, written as its own plan file."""

    plan: str  # path of the plan file, relative to the front's directory
    plan_hash: str  # what the plan quantizes (trtq.run.select.plan_hash): shared across GPUs
    fraction: float  # the achieved latency: max over budget points of plan / all-bf16
    omega: float  # the plan's sum of Omega
    weight_bytes: int


class Front(Artifact):
    KIND: ClassVar[str] = "front"
    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    gpu: str
    budgets: list[str]
    status: Literal["planned", "infeasible"]
    # infeasible: why the GPU has no plan at all; planned: why the budgets were not met (the front is then
    # this GPU's own, fastest feasible plan to all-bf16, and there is no budget plan)
    reason: str | None = None
    budget_plan: str | None = None  # the min-Omega plan at the budgets themselves
    candidates: list[FrontCandidate] = []  # fastest first


class Evaluation(StrictModel):
    plan_hash: str
    omega: float
    relative_increase: float | None  # None: the quantized perplexity overflowed
    passed: bool
    eval: str  # the EvalResult file, relative to the output root


class GpuSelection(StrictModel):
    gpu: str
    status: Literal["selected", "none_passes", "infeasible"]
    reason: str | None = None
    candidates: int = 0  # distinct plans on the front
    selected: int | None = None  # index into the front's candidates, fastest first
    plan: str | None = None  # the selected plan's file, relative to the output root
    fraction: float | None = None
    within_budgets: bool | None = None  # the selected plan also meets the pipeline's budgets
    price_per_hour: float | None = None
    probed: list[str] = []  # plan hashes this GPU's bisection looked at, in order
    evaluations: list[Evaluation] = []  # every outcome this GPU's bisection used


class Selection(Artifact):
    KIND: ClassVar[str] = "selection"
    SCHEMA_VERSION: ClassVar[int] = 1
    # How much this run measured, not what it selected: a re-selection from cached evaluations is the same data.
    VOLATILE_FIELDS: ClassVar[tuple[str, ...]] = ("evaluations_run", "evaluations_cached")

    model: str
    max_ppl_increase: float  # percent
    lm_eval: dict[str, float] = {}
    gpus: list[GpuSelection]
    evaluations_run: int  # evaluations this run performed (the rest came from the cache)
    evaluations_cached: int
    fit: str | None = None  # Omega -> perplexity fit of the evaluated plans (trtq.plan.quality_fit)
