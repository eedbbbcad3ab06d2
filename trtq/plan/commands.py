"""`trtq plan MODEL --profile P --sensitivity S --gpu GPU --budget decode@16=0.6 ... -o plan.yaml`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file

# Kept here, not imported from trtq.plan.api, so `trtq --help` imports no solver.
DEFAULT_NODE_LIMIT = 100_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="solve the per-layer format ILP under latency and memory budgets")
    p.add_argument("model", help="built-in alias, HF id or local path")
    p.add_argument("--profile", required=True, help="latency table from `trtq profile`")
    p.add_argument("--sensitivity", required=True, help="table from `trtq sensitivity`")
    p.add_argument("--gpu", required=True, help="target GPU from `trtq gpus`")
    p.add_argument("--budget", action="append", default=[], metavar="PHASE@TOKENS=VALUE",
                   help="latency budget: decode@16=0.6 (fraction of all-bf16) or prefill@2048=12ms; repeatable")
    p.add_argument("--memory-gb", type=float, help="weight-memory budget in GB (1e9 bytes), all weights")
    p.add_argument("--pareto", type=int, metavar="N", help="also sweep N >= 2 budget fractions (Pareto front)")
    p.add_argument("--formats", help="restrict the candidate formats (comma-separated)")
    p.add_argument("--runtime", metavar="NAME@VERSION",
                   help="TensorRT-LLM runtime the plan is for (see `trtq formats --runtime`; default: the release "
                        "docker/ pins, PyTorch backend); trtllm-engine@1.2 = legacy engines with INT8-SQ")
    p.add_argument("--workload", metavar="isl=N,osl=N[,concurrency=N] | FILE",
                   help="serving workload (or a YAML/JSON file with isl, osl, concurrency): the plan must fit its "
                        "KV cache in GPU memory and meet --slo at it (the step model of `trtq predict`)")
    p.add_argument("--slo", action="append", default=[], metavar="ttft=MS|tpot=MS",
                   help="service-level objective at --workload: ttft=500ms, tpot=30ms (or both, comma-separated); "
                        "repeatable")
    p.add_argument("--kv-formats", metavar="LIST",
                   help="KV-cache formats to choose among with --workload (default: bf16 and those the "
                        "sensitivity table measured, where the runtime runs them)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size for --workload (default 1)")
    p.add_argument("--solver", choices=("highs", "cbc"), default="highs")
    p.add_argument("--mip-gap", type=float, default=1e-3,
                   help="relative optimality gap of the ILP (default 0.001; 0 = exact optimum)")
    p.add_argument("--node-limit", type=int, default=DEFAULT_NODE_LIMIT, metavar="N",
                   help=f"stop the solver after N branch-and-bound nodes with its best plan and the gap it proved "
                        f"(default {DEFAULT_NODE_LIMIT}; deterministic)")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="stop the solver after S seconds with its best plan and the gap it proved (default: none; "
                        "a time limit makes the plan depend on the machine's speed, and the plan says so)")
    p.add_argument("-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES), help="plan file (YAML)")
    p.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.plan.api import PlanRequest, make_plan
    from trtq.plan.summary import print_plan_summary

    request = PlanRequest(args.budget, args.memory_gb, args.pareto, args.formats, args.solver, args.mip_gap,
                          time_limit_s=args.time_limit, node_limit=args.node_limit,
                          runtime=args.runtime, workload=args.workload, slos=args.slo,
                          kv_formats=args.kv_formats, tp=args.tp)
    request.check()     # every number in range before any file is read
    plan = make_plan(args.model, args.profile, args.sensitivity, args.gpu, request)
    save_artifact(plan, args.output)
    print_plan_summary([plan])
    print(f"wrote {args.output}")
    return 0
