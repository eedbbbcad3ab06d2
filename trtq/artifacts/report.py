"""The data behind an HTML report, written as JSON beside it.

One model feeds the page and the JSON: every number a chart or table shows is
here, raw (nanoseconds, bytes), so the JSON is the report without the pictures.
"""

from __future__ import annotations

from typing import ClassVar

from trtq.artifacts.io import Artifact, InputRef, StrictModel
from trtq.artifacts.plan import GroupFormat, Serving, SolverInfo
from trtq.artifacts.profile import ProvenanceLabel


class PointTotals(StrictModel):
    """Predicted summed GEMM time at one workload point, plan vs all-bf16."""

    point: str
    phase: str  # decode | prefill
    tokens: int
    predicted_ns: float
    bf16_ns: float
    spec: str | None = None  # the budget as written, when the point was budgeted
    limit_ns: float | None = None
    met: bool | None = None
    # provenance of the profile rows (measured | interpolated | extrapolated | modelled | unknown) -> ns of
    # predicted_ns from rows of that provenance; {} for plans that predate it
    provenance_ns: dict[ProvenanceLabel, float] = {}


class GroupRow(GroupFormat):
    """One fused group: its chosen format and its cost in every candidate format."""

    omega: dict[str, float]  # format -> Ω
    weight_bytes: dict[str, int]  # format -> bytes
    latency_ns: dict[str, dict[str, float]]  # format -> point -> ns


class ParetoRow(StrictModel):
    fraction: float
    status: str
    chosen: bool
    sensitivity: float | None = None
    weight_bytes: int | None = None
    latency_ns: dict[str, float] = {}
    format_counts: dict[str, int] = {}  # format -> number of groups in it
    provenance_ns: dict[str, dict[ProvenanceLabel, float]] = {}  # point -> provenance -> ns (as PointTotals)
    # a serving front (plan with a workload): the point's KV format, total Omega (groups + KV) and predictions
    kv_format: str | None = None
    total_omega: float | None = None
    output_tokens_per_s_per_gpu: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None


class LayerSensitivity(StrictModel):
    """One layer's Ω per format, from the sensitivity artifact (or per group from the plan)."""

    layer: str
    block: int | None
    kind: str
    chosen: str | None
    omega: dict[str, float]


class EvalSummary(StrictModel):
    text: str | None = None
    seq_len: int | None = None
    ppl_bf16: float
    ppl_quant: float
    relative_increase: float
    threshold: float | None = None
    passed: bool | None = None
    matches_plan: bool | None = None  # the eval's plan sha256 equals this plan's


class ProfileSummary(StrictModel):
    backend: str
    gpu: str
    device: dict[str, str] = {}
    launch_cost_ns: float
    rows: int
    ok_rows: int
    noisy_rows: int
    unsupported_rows: int
    median_cv: float | None = None


class BenchRow(StrictModel):
    """One row of the tidy bench table, as the report uses it."""

    series: str  # what the legend calls the run: engine / plan / GPU
    gpu: str
    engine: str
    plan_sha256: str | None
    concurrency: int
    metric: str
    statistic: str
    value: float
    unit: str


class PredictedVsMeasured(StrictModel):
    point: str
    concurrency: int
    predicted_ns: float  # summed GEMM time per decode step (the planner's model)
    measured_itl_ns: float  # measured inter-token latency, p50
    ratio: float  # measured / predicted


class ServingVsMeasured(StrictModel):
    """The plan's serving prediction at its workload beside `trtq bench` at the same concurrency."""

    quantity: str  # TTFT | TPOT | output tokens/s per GPU
    concurrency: int
    predicted: float
    measured: float
    unit: str  # ms | tokens/s
    statistic: str  # which measured statistic (p50, avg)
    ratio: float  # measured / predicted


class PlanReport(Artifact):
    KIND: ClassVar[str] = "plan_report"
    SCHEMA_VERSION: ClassVar[int] = 1

    title: str
    model: str
    gpu: str
    runtime: str | None = None  # the TensorRT-LLM runtime the plan was gated for (plan.runtime)
    gpu_memory_bytes: int | None = None
    plan_path: str
    plan_sha256: str
    plan_created_at: str
    profile_backend: str
    sensitivity_method: str
    solver: SolverInfo
    memory_budget_bytes: int | None = None
    candidate_formats: list[str]
    points: list[PointTotals]
    decode_point: str  # the point the latency-share chart uses
    weight_bytes: int
    bf16_weight_bytes: int
    sensitivity: float
    groups: list[GroupRow]
    pareto: list[ParetoRow]
    layer_sensitivity: list[LayerSensitivity]
    layer_sensitivity_source: str  # "sensitivity artifact (per layer)" | "plan (per fused group)"
    eval: EvalSummary | None = None
    profile: ProfileSummary | None = None
    bench: list[BenchRow] = []
    predicted_vs_measured: list[PredictedVsMeasured] = []
    serving_vs_measured: list[ServingVsMeasured] = []
    plan_versions: dict[str, str] = {}
    plan_inputs: dict[str, InputRef] = {}
    plan_notes: list[str] = []
    warnings: list[str] = []
    # The workload / SLOs the plan was solved for and the step model's prediction (plan.serving), and
    # the KV-cache format it chose; None for plans made against GEMM budgets only.
    serving: Serving | None = None


class ServingPrediction(StrictModel):
    """A GPU's plan served at the comparison's workload: the step model's answer (trtq predict)."""

    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s_per_gpu: float
    concurrency: int  # in flight (the workload's, or fewer where the KV cache holds fewer)
    max_concurrency: int  # sequences of isl + osl tokens whose KV cache fits
    kv_format: str
    modelled_share: float  # of the predicted time: from a model, not a table
    error: str | None = None  # why there is no prediction (then the numbers are 0)


class GpuColumn(StrictModel):
    """The plan one GPU is represented by in the comparison."""

    gpu: str
    sm: int | None = None
    memory_bytes: int | None = None
    plan_path: str
    plan_sha256: str
    selected: str  # how this point was picked, in words
    fraction: float | None = None
    sensitivity: float
    latency_ns: dict[str, float]  # point -> predicted summed GEMM time
    bf16_latency_ns: dict[str, float]
    serving: ServingPrediction | None = None  # at ComparisonReport.workload
    weight_bytes: int
    fits: bool | None = None
    memory_share: float | None = None  # weight bytes / GPU memory
    format_counts: dict[str, int]  # format -> groups
    format_weight_share: dict[str, float]  # format -> share of quantizable weight parameters
    candidate_formats: list[str]


class Verdict(StrictModel):
    point: str
    fastest: str
    speedups: dict[str, float]  # other GPU -> its latency / the fastest's
    text: str


class ComparisonReport(Artifact):
    KIND: ClassVar[str] = "comparison_report"
    # 2: serving at a workload (GpuColumn.serving) replaces the GEMM-bound tokens/s
    SCHEMA_VERSION: ClassVar[int] = 2

    title: str
    model: str
    selection: str  # the rule that picked each GPU's plan, in words
    workload: str | None = None  # isl=N,osl=N,concurrency=N each plan's serving is predicted at
    quality_bound: float | None = None
    fraction: float | None = None
    points: list[str]
    gpus: list[GpuColumn]
    verdicts: list[Verdict]
    measured_verdicts: list[Verdict] = []
    bench: list[BenchRow] = []
    warnings: list[str] = []
