"""`trtq layers MODEL`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.model.request import LayersRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's quantizable Linear layers, shapes and fused groups")
    p.add_argument("model", help=LayersRequest.model_fields["model"].description)
    add_options(p, LayersRequest, *(name for name in LayersRequest.model_fields if name != "model"))
    p.add_argument(
        "-o", "--output", type=output_file(*ARTIFACT_SUFFIXES), help="write the layer graph (JSON/YAML) here"
    )
    p.set_defaults(handler=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trtq.artifacts import save_artifact
    from trtq.console import fmt_bytes, stdout_console
    from trtq.model.layers import layers_of

    graph = layers_of(LayersRequest.from_args(args))
    table = Table(title=f"{graph.model}: {len(graph.layers)} quantizable layers in {len(graph.groups)} fused groups")
    for col in ("layer", "block", "kind", "in", "out", "group"):
        table.add_column(col)
    for layer in graph.layers:
        table.add_row(
            layer.name,
            "-" if layer.block is None else str(layer.block),
            layer.kind,
            str(layer.in_features),
            str(layer.out_features),
            layer.group,
        )
    console = stdout_console()
    console.print(table)
    console.print(
        f"{graph.total_parameters / 1e6:.1f} M parameters; unique GEMM shapes (out x in): "
        + ", ".join(
            f"{g.out_features}x{g.in_features}"
            + (f" ({g.experts} experts, top-{g.experts_per_token})" if g.experts else "")
            for g in graph.unique_gemms()
        )
        + f"; bf16 parameters outside the plan: {fmt_bytes(graph.fixed_parameter_bytes)}"
    )
    if args.output:
        save_artifact(graph, args.output)
        console.print(f"wrote {args.output}")
    return 0
