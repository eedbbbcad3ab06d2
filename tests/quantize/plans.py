"""Plan objects for quantize tests, built directly (the planner is not needed to test quantize)."""

from __future__ import annotations

from typing import Callable

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.plan import GroupChoice, Plan, SolverInfo, Totals
from trtq.registry import get_format


def group(name: str, members: list[str], fmt: str, group_size: int | None = None,
          in_features: int = 576, out_features: int = 576, kind: str = "linear",
          block: int | None = None) -> GroupChoice:
    return GroupChoice(group=name, kind=kind, block=block, members=members, in_features=in_features,
                       out_features=out_features, format=fmt, group_size=group_size, costs={})


def plan_of(groups: list[GroupChoice], model: str = "smollm2-135m", runtime: str | None = "trtllm-engine@1.2") -> Plan:
    # The legacy engine runtime by default: these plans mix int8_sq in, which only it runs.
    return Plan(
        artifact=Plan.KIND, schema_version=Plan.SCHEMA_VERSION, metadata=make_metadata(),
        model=model, gpu="h100", runtime=runtime, profile_backend="roofline", launch_cost_ns=0.0,
        sensitivity_method="weight", budgets=[], candidate_formats=sorted({g.format for g in groups}),
        fixed_parameter_bytes=0,
        solver=SolverInfo(name="test", version="0", status="Optimal", solve_time_s=0.0, objective=0.0,
                          mip_rel_gap=0.0),
        groups=groups,
        totals=Totals(latency_ns={}, bf16_latency_ns={}, weight_bytes=0, bf16_weight_bytes=0, sensitivity=0.0),
    )


def plan_from_graph(graph: LayerGraph, choose: Callable[[int, str, str], str], model: str | None = None) -> Plan:
    """choose(index, group name, group kind) -> format name; INT4 group size as the registry picks it."""
    groups = []
    for i, g in enumerate(graph.groups):
        fmt = get_format(choose(i, g.name, g.kind))
        groups.append(group(g.name, list(g.members), fmt.name, fmt.group_size_for(g.in_features),
                            g.in_features, g.out_features, g.kind, g.block))
    return plan_of(groups, model or graph.model)
