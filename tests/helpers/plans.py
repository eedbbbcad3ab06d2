"""Plan objects for quantize tests, built directly (the planner is not needed to test quantize)."""

from __future__ import annotations

import re
from typing import Callable

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.plan import FormatCost, GroupChoice, Plan, SolverInfo, Totals
from trtq.errors import UnknownNameError
from trtq.registry import get_format


def group(name: str, members: list[str], fmt: str, group_size: int | None = None,
          in_features: int = 576, out_features: int = 576, kind: str = "linear",
          block: int | None = None) -> GroupChoice:
    """A group with the costs a plan records for its own format and bf16 (bytes from the registry, Ω 0)."""
    costs = {}
    for name_ in dict.fromkeys(("bf16", fmt)):
        try:
            f = get_format(name_)
            size = group_size if f.block_sizes and name_ == fmt else None
            nbytes = f.weight_bytes(out_features, in_features, size) if (not f.block_sizes or size) else 0
        except (UnknownNameError, ValueError, ZeroDivisionError):
            nbytes = 0  # a deliberately malformed group: the reader's refusal is what is tested
        costs[name_] = FormatCost(omega=0.0, weight_bytes=nbytes, latency_ns={})
    return GroupChoice(group=name, kind=kind, block=block, members=members, in_features=in_features,
                       out_features=out_features, format=fmt, group_size=group_size, costs=costs)


def plan_of(groups: list[GroupChoice], model: str = "smollm2-135m", gpu: str | None = None,
            runtime: str | None = "trtllm-engine@1.2") -> Plan:
    """A plan whose totals add up over its groups; on B200 when it uses NVFP4 (H100 runs no NVFP4).

    The legacy engine runtime by default: these plans mix int8_sq in, which only it runs."""
    formats = {g.format for g in groups}
    gpu = gpu or ("B200" if "nvfp4" in formats else "h100")
    return Plan.create(
        metadata=make_metadata(),
        model=model, gpu=gpu, runtime=runtime, profile_backend="roofline", launch_cost_ns=0.0,
        sensitivity_method="weight", budgets=[], candidate_formats=sorted(formats | {"bf16"}),
        fixed_parameter_bytes=0,
        solver=SolverInfo(name="test", version="0", status="Optimal", solve_time_s=0.0, objective=0.0,
                          mip_rel_gap=0.0),
        groups=groups,
        totals=Totals(latency_ns={}, bf16_latency_ns={},
                      weight_bytes=sum(g.costs[g.format].weight_bytes for g in groups if g.format in g.costs),
                      bf16_weight_bytes=sum(g.costs["bf16"].weight_bytes for g in groups), sensitivity=0.0),
    )


def plan_from_graph(graph: LayerGraph, choose: Callable[[int, str, str], str], model: str | None = None) -> Plan:
    """choose(index, group name, group kind) -> format name; INT4 group size as the registry picks it."""
    groups = []
    for i, g in enumerate(graph.groups):
        fmt = get_format(choose(i, g.name, g.kind))
        groups.append(group(g.name, list(g.members), fmt.name, fmt.group_size_for(g.in_features),
                            g.in_features, g.out_features, g.kind, g.block))
    return plan_of(groups, model or graph.model)


# Every format in every SmolLM2 block, each kind on another one block by block (the shared `exported` plan).
MIXED_FORMATS = ("fp8", "int8_sq", "int4_awq", "w4a8_awq", "bf16")
_KIND_OFFSET = {"qkv": 0, "o_proj": 1, "gate_up": 2, "down_proj": 3}


def mixed_choice(index: int, name: str, kind: str) -> str:
    block = int(re.search(r"layers\.(\d+)\.", name).group(1))
    return MIXED_FORMATS[(block + _KIND_OFFSET[kind]) % len(MIXED_FORMATS)]
