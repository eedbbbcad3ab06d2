"""`trtq plan MODEL --profile P --sensitivity S --gpu GPU --budget decode@16=0.6 ... -o plan.yaml`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.plan.request import PlanRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="solve the per-layer format ILP under latency and memory budgets")
    p.add_argument("model", help="built-in alias, HF id or local path")
    p.add_argument("--profile", required=True, help="latency table from `trtq profile`")
    p.add_argument("--sensitivity", required=True, help="table from `trtq sensitivity`")
    p.add_argument("--gpu", required=True, help="target GPU from `trtq gpus`")
    add_options(
        p,
        PlanRequest,
        "budgets",
        "memory_gb",
        "pareto",
        "formats",
        "runtime",
        "workload",
        "slos",
        "kv_formats",
        "tp",
        "solver",
        "mip_rel_gap",
        "node_limit",
        "time_limit_s",
    )
    p.add_argument("-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES), help="plan file (YAML)")
    p.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.plan.api import make_plan
    from trtq.plan.summary import print_plan_summary

    request = PlanRequest.from_args(args)  # every number in range before any file is read
    plan = make_plan(args.model, args.profile, args.sensitivity, args.gpu, request)
    save_artifact(plan, args.output)
    print_plan_summary([plan])
    print(f"wrote {args.output}")
    return 0
