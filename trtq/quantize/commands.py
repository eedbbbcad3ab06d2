"""`trtq quantize MODEL --plan plan.yaml [--calib FILE --calib-samples N] -o engines/NAME/`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir
from trtq.model.device import add_device_options
from trtq.options import count, seed, seq_len


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
    p.add_argument("model", help="a model with weights: smollm2-135m or a local directory with safetensors")
    p.add_argument("--plan", required=True, help="plan.yaml from `trtq plan`")
    p.add_argument("--calib", help="UTF-8 calibration text file (default: the shipped calibration text)")
    p.add_argument("--calib-samples", type=count(1), default=16, help="calibration windows (default 16)")
    p.add_argument("--calib-seq-len", type=seq_len, default=512, help="tokens per window (default 512)")
    p.add_argument("--seed", type=seed, default=0, help="seed for drawing calibration windows")
    p.add_argument("--runtime", metavar="NAME@VERSION",
                   help="TensorRT-LLM runtime the checkpoint is for (default: the plan's; a plan made for another "
                        "runtime is refused)")
    add_device_options(p)
    p.add_argument("-o", "--output", required=True, type=output_dir, help="output directory, e.g. engines/NAME/")
    p.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from trtq.quantize.api import quantize_from_plan

    quantize_from_plan(
        model_spec=args.model, plan_path=args.plan, output=args.output, calib_path=args.calib,
        calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len, seed=args.seed, runtime=args.runtime,
        device=args.device, dtype=args.dtype,
    )
    return 0
