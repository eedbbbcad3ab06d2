"""`trtq sensitivity MODEL --method weight|hessian|fisher|autoquantize|output -o FILE`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.sensitivity.request import SensitivityRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensitivity", help="per-layer, per-format quality cost (weight, Hessian, Fisher or AutoQuantize)"
    )
    p.add_argument("model", help=SensitivityRequest.model_fields["model"].description)
    placement = ("device", "dtype")  # DeviceSettings' fields, listed after the method's own
    add_options(
        p,
        SensitivityRequest,
        *(name for name in SensitivityRequest.model_fields if name not in ("model", *placement)),
        *placement,
    )
    p.add_argument(
        "-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES), help="sensitivity table (JSON or YAML)"
    )
    p.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.sensitivity.api import checkpoint_dir_for, compute_sensitivity

    console = stderr_console()

    def progress(count: int, second: int, third: int | bool) -> None:
        if isinstance(third, bool):  # block-sequential: (steps done, steps, resumed); output: a step a block
            console.print(f"{request.method}: step {count}/{second} done" + (" (resumed)" if third else ""))
            return
        # Hessian: (probes, traces still active, traces)
        console.print(f"hessian: probe {count}, {third - second}/{third} traces converged")

    request = SensitivityRequest.from_args(args)
    checkpoint_dir = checkpoint_dir_for(args.output)
    table = compute_sensitivity(request, progress=progress, checkpoint_dir=checkpoint_dir)
    save_artifact(table, args.output)
    if request.sequential:  # its partial results, once the table is written
        from trtq.sensitivity.sequential import remove_checkpoint

        remove_checkpoint(checkpoint_dir)
    stderr_console().print(f"wrote {args.output}: {len(table.rows)} rows, method {table.method}")
    return 0
