"""plan.yaml: one format per layer, the budgets it meets, its predicted totals, its Pareto front."""

from __future__ import annotations

from typing import ClassVar, Literal

from trtq.artifacts.io import Artifact, InputRef, StrictModel
from trtq.artifacts.profile import ProvenanceLabel

Phase = Literal["decode", "prefill"]
PointStatus = Literal["optimal", "time_limit", "node_limit", "infeasible"]


class Budget(StrictModel):
    point: str  # workload point, e.g. "decode@16"
    phase: Phase
    tokens: int  # GEMM M at that point
    spec: str  # as the user wrote it, e.g. "decode@16=0.6"
    fraction: float | None = None  # of all-bf16 GEMM time, when given as a fraction
    limit_ns: float  # the resolved limit on summed GEMM latency
    bf16_ns: float  # all-bf16 summed GEMM latency at that point
    slack_ns: float | None = None  # limit_ns - the plan's summed latency, exact (>= 0); v2


class FormatCost(StrictModel):
    """The ILP's matrices for one group and one candidate format."""

    omega: float
    weight_bytes: int
    latency_ns: dict[str, float]  # workload point -> fused-GEMM latency


class GroupFormat(StrictModel):
    """One fused group (layers that share a format) and the format chosen for it."""

    group: str
    kind: str
    block: int | None
    members: list[str]
    in_features: int
    out_features: int
    format: str
    group_size: int | None


class GroupChoice(GroupFormat):
    costs: dict[str, FormatCost]  # every candidate format, the chosen one included


class Totals(StrictModel):
    latency_ns: dict[str, float]  # workload point -> summed GEMM latency
    bf16_latency_ns: dict[str, float]
    weight_bytes: int  # all weights, the fixed bf16 part included
    bf16_weight_bytes: int
    sensitivity: float  # sum of omega over groups
    # workload point -> provenance of the profile rows (measured | interpolated | extrapolated | modelled |
    # unknown) -> ns of latency_ns from rows of that provenance; {} in plans that predate it
    provenance_ns: dict[str, dict[ProvenanceLabel, float]] = {}

    def provenance_shares(self, point: str) -> dict[str, float]:
        """Fraction of the point's summed GEMM latency by provenance ({} when not recorded)."""
        parts = self.provenance_ns.get(point, {})
        total = sum(parts.values())
        return {p: ns / total for p, ns in parts.items()} if total > 0 else {}


class ParetoPoint(StrictModel):
    # Budget front: the common fraction of all-bf16 applied to every latency budget. Serving front
    # (a plan with a workload; the fields below set): the limit on the workload's request time
    # (predicted life of `concurrency` requests) as a fraction of the all-bf16 plan's.
    fraction: float
    status: PointStatus
    totals: Totals | None = None
    formats: list[str] = []  # one format per group, in `groups` order
    chosen: bool = False
    # v3: serving front only: the point's KV-cache format and its predictions at the workload
    kv_format: str | None = None
    kv_omega: float | None = None  # the KV format's Omega (total Omega = totals.sensitivity + this)
    output_tokens_per_s_per_gpu: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None


class SolverInfo(StrictModel):
    name: str
    version: str
    # optimal (within mip_rel_gap) | time_limit | node_limit (best plan found, within proven_gap)
    status: str
    solve_time_s: float
    objective: float | None
    mip_rel_gap: float  # the gap asked for
    proven_gap: float | None = None  # the gap HiGHS proved for this plan
    time_limit_s: float | None = None  # None: no wall-clock limit (the deterministic default)
    pareto_mip_rel_gap: float | None = None  # the gap each Pareto point was solved to
    # v2: what stopped the solver: optimal (gap proven ~0) | gap (mip_rel_gap reached)
    # | time_limit | node_limit. Only time_limit depends on the machine.
    stopped_by: str | None = None
    node_limit: int | None = None  # branch-and-bound nodes allowed (deterministic)
    nodes: int | None = None  # branch-and-bound nodes used
    # constraint -> how far its limit was tightened (fraction of it) because the solver's
    # answer was over the raw limit by its feasibility tolerance; the plan is optimal for the
    # tightened limit and meets the raw one (see the budgets' slack)
    tightened: dict[str, float] = {}


class Serving(StrictModel):
    """What the plan was solved for when given a workload (`--workload`, `--slo`): the serving step
    model's prediction of the chosen plan (trtq/plan/slo.py), re-computed by the step model itself."""

    isl: int
    osl: int
    concurrency: int
    tp: int = 1
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    kv_format: str  # the KV-cache format chosen (one of kv_candidates)
    kv_omega: float  # its quality cost, added to the groups' sum of Omega
    kv_candidates: dict[str, float] = {}  # feasible KV format -> the least total Omega with it
    ttft_ms: float  # predicted for the chosen plan
    tpot_ms: float
    output_tokens_per_s_per_gpu: float
    max_concurrency: int  # sequences of isl + osl tokens whose KV cache fits
    memory_slack_bytes: float  # free bytes left once the workload's KV cache is placed
    gemm_source: str  # where the GEMM latencies came from
    operating_point: dict[str, float | int | str] = {}


class GpuFacts(StrictModel):
    """The GPU registry's facts (profiles/gpus.yaml, as GpuSpec names them) on the plan's GPU when it was
    planned: what a report reads, so an edit of the registry later does not change a verdict."""

    name: str
    sm: int
    sm_count: int
    memory_bytes: int
    l2_bytes: int
    hbm_bandwidth_bytes_per_s: float
    peak_flops: dict[str, float]
    source: str


class Plan(Artifact):
    KIND: ClassVar[str] = "plan"
    # 2: budgets' slack_ns, memory_slack_bytes, solver.stopped_by/node_limit/nodes/tightened
    # 3: gpu_facts; a plan with a workload sweeps its front along throughput (ParetoPoint's serving fields)
    SCHEMA_VERSION: ClassVar[int] = 3
    READS_SCHEMA_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2, 3)
    VOLATILE_FIELDS: ClassVar[tuple[str, ...]] = ("solver.solve_time_s",)

    model: str
    gpu: str
    # The runtime the formats were gated for (profiles/runtimes.yaml, e.g. trtllm@1.2); None in plans
    # written before runtimes were recorded: readers then gate the formats against their --runtime.
    runtime: str | None = None
    profile_backend: str
    launch_cost_ns: float
    sensitivity_method: str
    budgets: list[Budget]
    memory_budget_bytes: int | None = None
    memory_slack_bytes: float | None = None  # memory budget - the plan's weight bytes (>= 0); v2
    candidate_formats: list[str]
    fixed_parameter_bytes: int
    solver: SolverInfo
    groups: list[GroupChoice]
    totals: Totals
    pareto: list[ParetoPoint] = []
    notes: list[str] = []
    # KV-cache format (None: bf16, not planned); `serving` when planned against a workload / SLOs.
    kv_format: str | None = None
    serving: Serving | None = None
    gpu_facts: GpuFacts | None = None  # None in plans before schema 3

    def layer_formats(self) -> dict[str, tuple[str, int | None]]:
        """layer name -> (format, group size): what `trtq quantize` applies."""
        return {m: (g.format, g.group_size) for g in self.groups for m in g.members}

    def input_hash(self, name: str) -> InputRef | None:
        return self.metadata.inputs.get(name)
