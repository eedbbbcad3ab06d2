"""`trtq sensitivity MODEL --method weight|hessian|fisher|autoquantize -o FILE`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.sensitivity.request import SensitivityRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="per-layer, per-format quality cost (weight, Hessian, Fisher or AutoQuantize)")
    p.add_argument("model", help=SensitivityRequest.model_fields["model"].description)
    add_options(p, SensitivityRequest, *(name for name in SensitivityRequest.model_fields if name != "model"))
    p.add_argument("-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES),
                   help="sensitivity table (JSON or YAML)")
    p.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.sensitivity.api import compute_sensitivity

    console = stderr_console()

    def progress(iteration: int, active: int, total: int) -> None:
        console.print(f"hessian: probe {iteration}, {total - active}/{total} traces converged")

    table = compute_sensitivity(SensitivityRequest.from_args(args), progress=progress)
    save_artifact(table, args.output)
    stderr_console().print(f"wrote {args.output}: {len(table.rows)} rows, method {table.method}")
    return 0
