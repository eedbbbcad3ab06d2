"""`trtq quantize MODEL --plan plan.yaml [--calib FILE --calib-samples N] -o engines/NAME/`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir
from trtq.quantize.request import QuantizeRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="apply a plan with ModelOpt: calibrate, export HF and TensorRT-LLM checkpoints",
        description=(
            "Turn plan.yaml into one ModelOpt quant_cfg, calibrate on text, and write OUTPUT/hf/ "
            "(unified HF checkpoint), OUTPUT/trtllm/ (TensorRT-LLM checkpoint), OUTPUT/plan.yaml "
            "and OUTPUT/quantize_summary.json."
        ),
    )
    p.add_argument("model", help=QuantizeRequest.model_fields["model"].description)
    add_options(
        p,
        QuantizeRequest,
        "plan",
        "calib",
        "calib_samples",
        "calib_seq_len",
        "seed",
        "sequential",
        "max_shard_size",
        "runtime",
        "device",
        "dtype",
    )
    p.add_argument("-o", "--output", required=True, type=output_dir, help="output directory, e.g. engines/NAME/")
    p.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from trtq.quantize.api import quantize_from_plan

    quantize_from_plan(QuantizeRequest.from_args(args), output=args.output)
    return 0
