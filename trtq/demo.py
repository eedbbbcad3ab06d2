"""`trtq demo`: `trtq run examples/smollm2.yaml`, with a few overrides for a quicker, rougher look.

The pipeline file is the demo: the embedded SmolLM2-135M, profiles for H100, A100 and B200 from NVIDIA's measured
TensorRT-LLM kernel tables (aiconfigurator-core; the calibrated roofline, marked modelled, for the formats a GPU's
tables lack), Hessian sensitivity, one Pareto front per GPU, and on each front the fastest plan whose measured
perplexity passes the 5% gate; the H100 plan quantized and its exported checkpoint evaluated; the hardware
comparison report. A GPU that cannot meet the budgets still gets its own front and selection, and the summary
says why the budget was missed. Re-running finds every stage cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trtq.artifacts.paths import output_dir, output_file
from trtq.options import count

DEMO_PIPELINE = Path(__file__).resolve().parent.parent / "examples" / "smollm2.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="trtq run examples/smollm2.yaml: SmolLM2-135M on H100, A100 and B200, the "
        "fastest plan per GPU that passes the quality gate, the comparison report",
    )
    p.add_argument("-o", "--out-dir", type=output_dir, help="where the artifacts go (default: the file's output)")
    p.add_argument(
        "--report",
        default="reports/demo-compare.html",
        type=output_file(".html", ".htm"),
        help="a copy of the hardware comparison report",
    )
    p.add_argument("--budget", action="append", default=None, metavar="PHASE@TOKENS=VALUE", help="latency budgets")
    p.add_argument("--pareto", type=count(2, 1000), help="Pareto points per GPU")
    p.add_argument("--runtime", metavar="NAME@VERSION", help="TensorRT-LLM runtime the plans are for")
    p.add_argument("--gpu", action="append", default=None, metavar="GPU", help="plan for this GPU (repeat)")
    p.add_argument("--seq-len", type=count(2), help="tokens per window for sensitivity, calibration, perplexity")
    p.add_argument("--hessian-samples", type=count(1), help="windows for the Hessian sensitivity")
    p.add_argument("--hessian-probes", type=count(2), help="Hutchinson probes at most")
    p.add_argument("--calib-samples", type=count(1), help="ModelOpt calibration windows")
    p.add_argument("--eval-windows", type=count(1), help="perplexity windows at most")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.set_defaults(handler=run_demo)


def demo_pipeline(args: argparse.Namespace):
    """examples/smollm2.yaml with the command line's overrides, checked like any pipeline file."""
    from trtq.artifacts.io import read_structured, validate_model
    from trtq.run.pipeline import Pipeline, check_pipeline

    data = read_structured(DEMO_PIPELINE, "pipeline file")
    if args.gpu:
        data["gpus"] = [{"name": name} for name in args.gpu]
        data["quantize"]["gpus"] = []
    for value, section, key in (
        (args.budget, "plan", "budgets"),
        (args.pareto, "plan", "pareto"),
        (args.seq_len, "sensitivity", "seq_len"),
        (args.seq_len, "quality", "seq_len"),
        (args.hessian_samples, "sensitivity", "samples"),
        (args.hessian_probes, "sensitivity", "probes"),
        (args.calib_samples, "quality", "calib_samples"),
        (args.eval_windows, "quality", "windows"),
    ):
        if value is not None:
            data[section][key] = value
    if args.runtime:
        data["runtime"] = args.runtime
    if args.out_dir:
        data["output"] = str(args.out_dir)
    pipeline = validate_model(Pipeline, data, f"pipeline {DEMO_PIPELINE} with the demo's options")
    check_pipeline(pipeline, DEMO_PIPELINE)
    if args.gpu and "H100-SXM" in pipeline.gpu_names():
        pipeline.quantize.gpus = ["H100-SXM"]  # as the file: quantize the H100 plan
    elif args.gpu:
        pipeline.quantize.gpus = pipeline.gpu_names()[:1]
    return pipeline


def run_demo(args: argparse.Namespace) -> int:
    from trtq.artifacts.io import atomic_write_bytes
    from trtq.console import stdout_console
    from trtq.run.commands import run_pipeline

    pipeline = demo_pipeline(args)
    code = run_pipeline(pipeline, force=args.force)
    compare = Path(pipeline.output) / "report" / "all" / "compare.html"
    if compare.is_file():
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(report.with_suffix(".json"), compare.with_suffix(".json").read_bytes())
        atomic_write_bytes(report, compare.read_bytes())
        stdout_console().print(f"hardware comparison report: {report}", markup=False)
    return code
