"""`trtq eval MODEL (--plan plan.yaml | --checkpoint DIR) [--text FILE] [--seq-len 512] [--max-ppl-increase 5]
[--lm-eval TASKS]`."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.model.device import add_device_options
from trtq.options import count, number, seed, seq_len
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="quality gate: perplexity (and lm-eval tasks) of the quantized model against the reference",
        description=(
            "Score the unquantized model and a quantized one on real text, write an eval artifact, and "
            "exit 1 when the perplexity rises by more than the limit or an lm-eval task degrades past its "
            "threshold. The quantized model is either the model quantized as a plan says (--plan: ModelOpt "
            "fake quantization; trtq's reference NVFP4 for weights where ModelOpt needs CUDA), or the "
            "checkpoint `trtq quantize` exported (--checkpoint: the packed weights, scales and "
            "pre_quant_scales as shipped, rebuilt into a float model with activations quantized by the "
            "exported input scales)."
        ),
    )
    p.add_argument("model", help="a model with weights: smollm2-135m or a local directory with safetensors")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--plan", help="plan.yaml from `trtq plan`")
    source.add_argument("--checkpoint", metavar="DIR",
                        help="a checkpoint written by `trtq quantize` (engines/NAME, or its hf/ directory)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 evaluation text (default: the shipped evaluation text)")
    p.add_argument("--seq-len", type=seq_len, default=512, help="tokens per window (default 512)")
    p.add_argument("--windows", type=count(0), default=32,
                   help="windows scored, spread evenly over the text (default 32; 0 = all)")
    p.add_argument("--max-ppl-increase", type=number(minimum=0, maximum=1e6), default=5.0, metavar="PERCENT",
                   help="largest relative perplexity increase that passes, percent (default 5)")
    p.add_argument("--lm-eval", metavar="TASKS",
                   help="comma-separated lm-eval tasks, each optionally =THRESHOLD percent (defaults: "
                        "mmlu 3, hellaswag 2, gsm8k 5, others 5); trtq_devil_definitions runs offline")
    p.add_argument("--lm-eval-limit", type=count(1), help="score only the first N documents of each task")
    p.add_argument("--calib", metavar="FILE", help="calibration text for the plan's quantization "
                                                   "(default: the shipped calibration text; --plan only)")
    p.add_argument("--calib-samples", type=count(1), default=16, help="calibration windows (default 16; --plan only)")
    p.add_argument("--calib-seq-len", type=seq_len, default=512,
                   help="tokens per calibration window (default 512; --plan only)")
    p.add_argument("--seed", type=seed, default=0)
    add_device_options(p)
    p.add_argument("-o", "--output", default="eval.json", type=output_file(*ARTIFACT_SUFFIXES),
                   help="eval artifact (JSON or YAML; default eval.json)")
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.eval.gate import EvalRequest, evaluate, verdict

    console = stderr_console()
    request = EvalRequest(
        model=args.model, plan=args.plan, checkpoint=args.checkpoint, text=args.text, seq_len=args.seq_len,
        max_windows=None if args.windows == 0 else args.windows, max_ppl_increase=args.max_ppl_increase,
        lm_eval=args.lm_eval, lm_eval_limit=args.lm_eval_limit, calib=args.calib,
        calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len, seed=args.seed,
        device=args.device, dtype=args.dtype,
    )
    result = evaluate(request, progress=lambda message: console.print(message, highlight=False))
    save_artifact(result, args.output)
    line = verdict(result)
    if result.passed:
        console.print(f"{line}; wrote {args.output}", highlight=False)
        return 0
    print(f"trtq: eval gate failed: {line}; wrote {args.output}", file=sys.stderr)
    return 1
