"""`trtq sensitivity MODEL --method weight|hessian|fisher|autoquantize -o FILE`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.model.device import add_device_options
from trtq.options import count, number, seed, seq_len


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="per-layer, per-format quality cost (weight, Hessian, Fisher or AutoQuantize)")
    p.add_argument("model", help="a model with weights: smollm2-135m or a local directory with safetensors")
    p.add_argument("--method", choices=("weight", "hessian", "fisher", "autoquantize", "output"), default="weight",
                   help="weight: ||Q(W)-W||^2; hessian: Hutchinson traces of each layer's weight and input Hessians "
                        "x their quantization errors (HAWQ-V3, with HAWQ-V2's activation term); "
                        "fisher: Fisher-weighted output error of quantized weights and activations; "
                        "autoquantize: ModelOpt AutoQuantize's own per-layer scores (lm_head disabled); "
                        "output: 1/2 ||Q(X)Q(W)^T - XW^T||^2 on calibration tokens (GPTQ's layer-wise Hessian)")
    p.add_argument("--sequential", action="store_true",
                   help="output: one decoder block in memory at a time, read from the safetensors; a killed run "
                        "resumes from the last finished block (partial results in .OUTPUT.partial/ beside -o)")
    p.add_argument("--score", choices=("gradient", "kl_div"), default="gradient",
                   help="autoquantize: ModelOpt's score, gradient (loss-weighted output error) or kl_div "
                        "(default: gradient)")
    p.add_argument("--score-batch", type=count(1), default=4,
                   help="autoquantize: calibration windows per AutoQuantize step (default: 4)")
    p.add_argument("--formats", help="comma-separated formats (default: all)")
    p.add_argument("--include-lm-head", action="store_true")
    p.add_argument("--calib", metavar="FILE",
                   help="hessian/fisher/autoquantize: UTF-8 calibration text (default: the shipped calibration text)")
    p.add_argument("--samples", type=count(1), default=8,
                   help="hessian/fisher/autoquantize: calibration windows (default: 8)")
    p.add_argument("--seq-len", type=seq_len, default=512,
                   help="hessian/fisher/autoquantize: tokens per window (default: 512)")
    p.add_argument("--tolerance", type=number(), default=None,
                   help="hessian: stop a trace (a layer's weight or input) when its running mean changes by less than this "
                        "fraction (default: 0.05)")
    p.add_argument("--max-iterations", type=count(1, 10_000), default=None,
                   help="hessian: most Hutchinson probes (default: 8)")
    p.add_argument("--seed", type=seed, default=0)
    add_device_options(p)
    p.add_argument("-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES),
                   help="sensitivity table (JSON or YAML)")
    p.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace) -> int:
    from trtq.console import stderr_console
    from trtq.sensitivity.api import compute_sensitivity

    console = stderr_console()

    def progress(iteration: int, active, total: int) -> None:
        if isinstance(active, bool):   # block-sequential: (blocks done, blocks, resumed)
            console.print(f"output: block {iteration}/{total} done" + (" (resumed)" if active else ""))
            return
        console.print(f"hessian: probe {iteration}, {total - active}/{total} traces converged")

    table = compute_sensitivity(args, progress=progress)
    stderr_console().print(f"wrote {args.output}: {len(table.rows)} rows, method {table.method}")
    return 0
