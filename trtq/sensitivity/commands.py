"""`trtq sensitivity MODEL --method weight|hessian -o FILE`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="per-layer, per-format quality cost (weight or Hessian-weighted)")
    p.add_argument("model", help="a model with weights: smollm2-135m or a local directory with safetensors")
    p.add_argument("--method", choices=("weight", "hessian"), default="weight",
                   help="weight: ||Q(W)-W||^2; hessian: Hutchinson tr(H) x ||Q(W)-W||^2 (HAWQ-V2/V3)")
    p.add_argument("--formats", help="comma-separated formats (default: all)")
    p.add_argument("--include-lm-head", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="sensitivity table (JSON or YAML)")
    p.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace) -> int:
    from trtq.console import stderr_console
    from trtq.sensitivity.api import compute_sensitivity

    table = compute_sensitivity(args)
    stderr_console().print(f"wrote {args.output}: {len(table.rows)} rows, method {table.method}")
    return 0
