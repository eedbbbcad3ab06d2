"""`trtq gpus` and `trtq formats`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="list the GPU registry (specs, peaks, supported formats)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run_gpus)
    p = sub.add_parser("formats", help="list the format registry (bits, blocks, ModelOpt config, first arch)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
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

    table = Table(title="GPU registry (dense datasheet peaks)")
    for col in ("GPU", "arch", "memory", "HBM", "bf16", "fp8", "int8", "fp4", "formats"):
        table.add_column(col)
    for g in gpus:
        peak = lambda key: f"{g.peak_flops[key] / 1e12:g} T" if key in g.peak_flops else "-"  # noqa: E731
        table.add_row(
            g.name, f"sm{g.sm}", fmt_bytes(g.memory_bytes), f"{g.hbm_bandwidth_bytes_per_s / 1e12:g} TB/s",
            peak("bf16"), peak("fp8"), peak("int8"), peak("fp4"), ", ".join(f.name for f in g.formats),
        )
    stdout_console().print(table)
    return 0


def run_formats(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from trtq.console import stdout_console
    from trtq.registry import FORMATS

    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in FORMATS.values()], indent=1))
        return 0
    from rich.table import Table

    table = Table(title="Format registry")
    for col in ("format", "weights", "activations", "blocks", "compute", "ModelOpt config", "first arch"):
        table.add_column(col)
    for f in FORMATS.values():
        table.add_row(
            f.name, f"{f.weight_dtype} ({f.weight_bits:g} b)", f"{f.act_dtype} ({f.act_bits:g} b)",
            "/".join(map(str, f.block_sizes)) or "-", f.compute, f.modelopt_config or "(none)", f"sm{f.min_sm}",
        )
    stdout_console().print(table)
    return 0
