"""`trtq eval MODEL (--plan plan.yaml | --checkpoint DIR) [--sequential] [--text FILE] [--seq-len 512]
[--max-ppl-increase 5] [--lm-eval TASKS]`."""

from __future__ import annotations

import argparse
import sys

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.eval.request import EvalRequest
from trtq.settings import add_options


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
    p.add_argument("model", help=EvalRequest.model_fields["model"].description)
    source = p.add_mutually_exclusive_group()
    add_options(source, EvalRequest, "plan", "checkpoint")
    add_options(
        p,
        EvalRequest,
        "sequential",
        "text",
        "seq_len",
        "windows",
        "max_ppl_increase",
        "lm_eval",
        "lm_eval_limit",
        "calib",
        "calib_samples",
        "calib_seq_len",
        "seed",
        "device",
        "dtype",
    )
    p.add_argument(
        "-o",
        "--output",
        default="eval.json",
        type=output_file(*ARTIFACT_SUFFIXES),
        help="eval artifact (JSON or YAML; default eval.json)",
    )
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.eval.gate import evaluate, verdict

    console = stderr_console()
    request = EvalRequest.from_args(args)
    result = evaluate(
        request, progress=lambda message: console.print(message, highlight=False), work_beside=args.output
    )
    save_artifact(result, args.output)
    line = verdict(result)
    if result.passed:
        console.print(f"{line}; wrote {args.output}", highlight=False)
        return 0
    print(f"trtq: eval gate failed: {line}; wrote {args.output}", file=sys.stderr)
    return 1
