"""`trtq gpus` and `trtq formats`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="list the GPU registry (specs, peaks, supported formats)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run_gpus)
    p = sub.add_parser(
        "formats",
        help="list the format registry; with --gpu, what a TensorRT-LLM runtime can plan there and why the rest cannot",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--gpu", help="show what is plannable on this GPU (see `trtq gpus`)")
    p.add_argument(
        "--runtime",
        metavar="NAME@VERSION",
        help="with --gpu: the runtime (default: the release docker/ pins); `all` = every runtime",
    )
    p.add_argument("--model", help="with --gpu: also check the runtime's model-family matrix (alias, HF id or path)")
    p.set_defaults(handler=run_formats)


def run_gpus(args: argparse.Namespace) -> int:
    import json

    from trtq.console import fmt_bytes, stdout_console
    from trtq.registry import list_gpus

    gpus = list_gpus()
    if args.json:
        print(json.dumps([g.model_dump() | {"formats": [f.name for f in g.formats]} for g in gpus], indent=1))
        return 0
    from rich.table import Table

    table = Table(
        title="GPU registry (dense datasheet peaks; formats the hardware runs: `trtq formats --gpu G` "
        "for what a runtime plans)"
    )
    for col in ("GPU", "arch", "memory", "HBM", "bf16", "fp8", "int8", "fp4", "formats"):
        table.add_column(col)
    for g in gpus:
        peak = lambda key, g=g: f"{g.peak_flops[key] / 1e12:g} T" if key in g.peak_flops else "-"  # noqa: E731
        table.add_row(
            g.name,
            f"sm{g.sm}",
            fmt_bytes(g.memory_bytes),
            f"{g.hbm_bandwidth_bytes_per_s / 1e12:g} TB/s",
            peak("bf16"),
            peak("fp8"),
            peak("int8"),
            peak("fp4"),
            ", ".join(f.name for f in g.formats),
        )
    stdout_console().print(table)
    return 0


def run_formats(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from trtq.console import stdout_console
    from trtq.registry import FORMATS

    if args.gpu:
        return _run_gpu_formats(args)
    if args.runtime or args.model:
        from trtq.errors import InputError

        raise InputError("--runtime and --model go with --gpu GPU (what is plannable there)")
    if args.json:
        # Sets (e.g. the producers a format fuses with) print as sorted lists.
        print(
            json.dumps(
                [dataclasses.asdict(f) for f in FORMATS.values()],
                indent=1,
                default=lambda value: sorted(value) if isinstance(value, (set, frozenset)) else str(value),
            )
        )
        return 0
    from rich.table import Table

    table = Table(title="Format registry")
    for col in ("format", "weights", "activations", "blocks", "compute", "ModelOpt config", "first arch"):
        table.add_column(col)
    for f in FORMATS.values():
        table.add_row(
            f.name,
            f"{f.weight_dtype} ({f.weight_bits:g} b)",
            f"{f.act_dtype} ({f.act_bits:g} b)",
            "/".join(map(str, f.block_sizes)) or "-",
            f.compute,
            f.modelopt_config or "(none)",
            f"sm{f.min_sm}",
        )
    stdout_console().print(table)
    return 0


def _run_gpu_formats(args: argparse.Namespace) -> int:
    import json

    from trtq.console import stdout_console
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import architecture_of, format_rows, get_runtime, list_runtimes

    gpu = get_gpu(args.gpu)
    runtimes = list_runtimes() if (args.runtime or "").lower() == "all" else [get_runtime(args.runtime)]
    architecture = None
    if args.model:
        from trtq.model.zoo import resolve_model

        archs = resolve_model(args.model).config.get("architectures") or []
        architecture = archs[0] if archs else None
    result = {r.name: format_rows(gpu, r, architecture) for r in runtimes}
    if args.json:
        print(
            json.dumps(
                {
                    "gpu": gpu.name,
                    "sm": gpu.sm,
                    "architecture": architecture_of(gpu),
                    "model_architecture": architecture,
                    "runtimes": result,
                },
                indent=1,
            )
        )
        return 0
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    for runtime in runtimes:
        table = Table(
            title=f"{gpu.name} (sm{gpu.sm}, {architecture_of(gpu)}) under {runtime.name} "
            f"({runtime.product} {runtime.release}, {runtime.backend} backend)"
        )
        for col in ("format", "plannable", "why"):
            table.add_column(col)
        for row in result[runtime.name]:
            table.add_row(escape(row["format"]), "yes" if row["plannable"] else "no", escape(row["why"]))
        console.print(table)
    return 0
