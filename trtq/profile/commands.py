"""`trtq profile MODEL --gpu GPU --backend roofline|cpu --tokens ... -o FILE`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="per-layer latency table (unique GEMM shape x format x tokens, ns)")
    p.add_argument("model", help="built-in alias, HF id or local path (config only is enough)")
    p.add_argument("--gpu", help="target GPU from `trtq gpus` (roofline: required; cpu: ignored)")
    p.add_argument("--backend", default="roofline", help="profiler backend: roofline | cpu")
    p.add_argument("--tokens", default="1,16,128,2048", help="GEMM M values (token counts), comma-separated")
    p.add_argument("--formats", help="comma-separated formats (default: all the GPU supports)")
    p.add_argument("--launch-cost", type=float, default=None, metavar="NS",
                   help="roofline: fixed cost per GEMM in ns (default: the GPU's; 0 = pure kernel time)")
    p.add_argument("--repeats", type=int, default=None, help="measuring backends: minimum repetitions")
    p.add_argument("--warmup", type=int, default=None, help="measuring backends: warm-up runs")
    p.add_argument("--include-lm-head", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="profile table (JSON or YAML)")
    p.set_defaults(handler=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile, parse_tokens

    tokens = parse_tokens(args.tokens)
    if args.launch_cost is not None and args.launch_cost < 0:
        from trtq.errors import InputError

        raise InputError("--launch-cost must be >= 0 ns")
    harness = {k: v for k, v in (("min_repeats", args.repeats), ("warmup", args.warmup)) if v is not None}
    graph = build_layer_graph(resolve_model(args.model), include_lm_head=args.include_lm_head)
    console = stderr_console()
    profile = build_profile(graph, args.backend, args.gpu, tokens, args.formats, args.launch_cost,
                            harness, args.seed)
    save_artifact(profile, args.output)
    ok = sum(r.latency_ns is not None for r in profile.rows)
    console.print(
        f"{graph.model}: {len(graph.unique_shapes())} unique GEMM shapes x {len(profile.formats)} formats x "
        f"{len(tokens)} token counts = {len(profile.rows)} rows ({ok} with a latency) -> {args.output}"
    )
    return 0
