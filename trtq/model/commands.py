"""`trtq layers MODEL`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's quantizable Linear layers, shapes and fused groups")
    p.add_argument("model", help="built-in alias (smollm2-135m, llama-3.1-8b ...), HF id or local path")
    p.add_argument("--include-lm-head", action="store_true", help="treat lm_head as quantizable")
    p.add_argument("-o", "--output", type=output_file(*ARTIFACT_SUFFIXES),
                   help="write the layer graph (JSON/YAML) here")
    p.set_defaults(handler=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trtq.artifacts import save_artifact
    from trtq.console import fmt_bytes, stdout_console
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model

    graph = build_layer_graph(resolve_model(args.model), include_lm_head=args.include_lm_head)
    table = Table(title=f"{graph.model}: {len(graph.layers)} quantizable layers in {len(graph.groups)} fused groups")
    for col in ("layer", "block", "kind", "in", "out", "group"):
        table.add_column(col)
    for layer in graph.layers:
        table.add_row(layer.name, "-" if layer.block is None else str(layer.block), layer.kind,
                      str(layer.in_features), str(layer.out_features), layer.group)
    console = stdout_console()
    console.print(table)
    console.print(
        f"{graph.total_parameters / 1e6:.1f} M parameters; unique GEMM shapes (out x in): "
        + ", ".join(f"{g.out_features}x{g.in_features}" + (f" ({g.experts} experts, top-{g.experts_per_token})"
                                                            if g.experts else "") for g in graph.unique_gemms())
        + f"; bf16 parameters outside the plan: {fmt_bytes(graph.fixed_parameter_bytes)}"
    )
    if args.output:
        save_artifact(graph, args.output)
        console.print(f"wrote {args.output}")
    return 0
