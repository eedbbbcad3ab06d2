"""`trtq demo`: the whole planning pipeline on the embedded SmolLM2-135M, on this machine.

layers -> roofline profiles for H100, A100 and B200 -> Hessian sensitivity ->
one plan per GPU at the same budgets -> a summary table -> the H100 plan applied with
ModelOpt and its perplexity against bf16 -> the hardware comparison report. SmolLM2's GEMMs are far below a GPU's launch
cost, so the demo plans against kernel time (launch cost 0) and says so.

Plans are for the default runtime (TensorRT-LLM 1.2, PyTorch backend). There an A100 runs bf16 and
W4A16 AWQ only, and W4A16 does not speed up a 2048-token prefill: at the demo's budgets the A100 is
reported as infeasible, not planned (`--runtime trtllm-engine@1.2` plans it with INT8-SmoothQuant).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trtq.artifacts.paths import output_dir, output_file
from trtq.options import count

DEMO_MODEL = "smollm2-135m"
DEMO_GPUS = ("H100-SXM", "A100-SXM-80GB", "B200")
DEMO_BUDGETS = ("decode@16=0.45", "prefill@2048=0.9")
DEMO_TOKENS = "1,16,128,2048"
# Hutchinson settings that keep the demo to a minute or two on 2 CPU cores.
DEMO_HESSIAN_SAMPLES, DEMO_HESSIAN_SEQ_LEN, DEMO_HESSIAN_PROBES = 4, 256, 6
DEMO_EVAL_GPU = "H100-SXM"
DEMO_EVAL_WINDOWS, DEMO_CALIB_SAMPLES = 16, 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="plan SmolLM2-135M for H100, A100 and B200, quantize one plan, "
                                    "write the comparison report")
    p.add_argument("-o", "--out-dir", default="engines/demo", type=output_dir, help="where the demo's artifacts go")
    p.add_argument("--report", default="reports/demo-compare.html", type=output_file(".html", ".htm"),
                   help="the hardware comparison report")
    p.add_argument("--budget", action="append", default=None, metavar="PHASE@TOKENS=VALUE",
                   help=f"latency budgets (default: {' '.join(DEMO_BUDGETS)})")
    p.add_argument("--pareto", type=count(0, 1000), default=12, help="Pareto points per GPU")
    p.add_argument("--runtime", metavar="NAME@VERSION",
                   help="TensorRT-LLM runtime the plans are for (default: the release docker/ pins, PyTorch backend; "
                        "trtllm-engine@1.2 for legacy engines with INT8-SQ)")
    # A quicker, rougher run of the same pipeline (fewer GPUs, windows, probes): e.g. for a first look or CI.
    p.add_argument("--gpu", action="append", default=None, metavar="GPU",
                   help=f"plan for this GPU (repeat; default: {' '.join(DEMO_GPUS)}); the {DEMO_EVAL_GPU} plan "
                        "is evaluated, else the first GPU's")
    p.add_argument("--seq-len", type=count(1), default=DEMO_HESSIAN_SEQ_LEN,
                   help=f"tokens per window for sensitivity, calibration and perplexity (default {DEMO_HESSIAN_SEQ_LEN})")
    p.add_argument("--hessian-samples", type=count(1), default=DEMO_HESSIAN_SAMPLES,
                   help=f"windows for the Hessian sensitivity (default {DEMO_HESSIAN_SAMPLES})")
    p.add_argument("--hessian-probes", type=count(1), default=DEMO_HESSIAN_PROBES,
                   help=f"Hutchinson probes at most (default {DEMO_HESSIAN_PROBES})")
    p.add_argument("--calib-samples", type=count(1), default=DEMO_CALIB_SAMPLES,
                   help=f"ModelOpt calibration windows (default {DEMO_CALIB_SAMPLES})")
    p.add_argument("--eval-windows", type=count(1), default=DEMO_EVAL_WINDOWS,
                   help=f"perplexity windows at most (default {DEMO_EVAL_WINDOWS})")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console, stdout_console
    from trtq.errors import InfeasibleError
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import load_pretrained, require_embedded_model
    from trtq.plan.api import PlanRequest, make_plan
    from trtq.plan.budgets import parse_budgets
    from trtq.plan.summary import print_plan_summary
    from trtq.profile.api import build_profile, parse_tokens
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import get_runtime
    from trtq.sensitivity.api import hessian_sensitivity

    budgets = args.budget or list(DEMO_BUDGETS)
    parse_budgets(budgets)  # a malformed budget is refused before any model work
    runtime = get_runtime(args.runtime)  # so is an unknown runtime
    gpus = list(dict.fromkeys(get_gpu(name).name for name in args.gpu)) if args.gpu else list(DEMO_GPUS)  # and GPU
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = stderr_console()
    resolved = require_embedded_model()

    log.print(f"[1/5] layers of {DEMO_MODEL}")
    graph = build_layer_graph(resolved)
    save_artifact(graph, out / "layers.json")
    log.print(f"      {len(graph.layers)} quantizable layers, {len(graph.groups)} fused groups, "
              f"{len(graph.unique_shapes())} unique GEMM shapes")

    log.print("[2/5] roofline profiles (kernel time: launch cost 0)")
    profiles = {}
    for gpu in gpus:
        profile = build_profile(graph, "roofline", gpu, parse_tokens(DEMO_TOKENS), launch_cost_ns=0.0)
        profiles[gpu] = save_artifact(profile, out / f"profile-{gpu}.json")

    log.print("[3/5] Hessian sensitivity on the real model (HAWQ: Hutchinson traces of weights and inputs)")
    model, tokenizer = load_pretrained(resolved)
    hessian = hessian_sensitivity(DEMO_MODEL, args.hessian_samples, args.seq_len, 0, model=model,
                                  tokenizer=tokenizer, max_iterations=args.hessian_probes)
    sensitivity_path = save_artifact(hessian, out / "sensitivity-hessian.json")

    log.print(f"[4/5] one plan per GPU at {', '.join(budgets)} (Hessian sensitivity), for TensorRT-LLM "
              f"{runtime.release} ({runtime.backend} backend, runtime {runtime.name})")
    plans = []
    planned = []
    for gpu in gpus:
        stale = out / f"plan-{gpu}.yaml"
        stale.unlink(missing_ok=True)  # a plan from an earlier run must not reach the report
        try:
            plan = make_plan(DEMO_MODEL, profiles[gpu], sensitivity_path, gpu,
                             PlanRequest(budgets=budgets, pareto=args.pareto, runtime=runtime.name), graph=graph)
        except InfeasibleError as exc:
            # Under the PyTorch backend an A100 has bf16 and W4A16 only, and W4A16 does not speed up a prefill:
            # a GPU whose runtime cannot meet the budgets is reported, not planned.
            log.print(f"      {gpu}: no plan under {runtime.name}: {exc}")
            continue
        save_artifact(plan, out / f"plan-{gpu}.yaml")
        plans.append(plan)
        planned.append(gpu)
    if not plans:
        raise InfeasibleError(f"no GPU of {', '.join(gpus)} meets {', '.join(budgets)} under {runtime.name}")
    print_plan_summary(plans, title=f"{DEMO_MODEL}: one plan per GPU for TensorRT-LLM ({runtime.backend} backend, "
                                    f"{runtime.name}; roofline kernel time, Hessian sensitivity)")

    eval_gpu = DEMO_EVAL_GPU if DEMO_EVAL_GPU in planned else planned[0]
    log.print(f"[5/5] perplexity of the {eval_gpu} plan after ModelOpt fake quantization")
    from trtq.eval.gate import EvalRequest, evaluate, verdict

    result = evaluate(EvalRequest(model=DEMO_MODEL, plan=str(out / f"plan-{eval_gpu}.yaml"), seq_len=args.seq_len,
                                  windows=args.eval_windows, calib_samples=args.calib_samples,
                                  calib_seq_len=args.seq_len),
                      model=model, tokenizer=tokenizer)
    save_artifact(result, out / f"eval-{eval_gpu}.json")

    from trtq.report.render import write_comparison_report

    report = write_comparison_report([out / f"plan-{gpu}.yaml" for gpu in planned], args.report)
    console = stdout_console()
    console.print(f"{eval_gpu} plan on the evaluation text: {verdict(result)}")
    console.print(f"artifacts in {out}/: layers.json, profile-*.json, sensitivity-hessian.json, plan-*.yaml, eval-*.json")
    console.print(f"hardware comparison report: {report}")
    return 0
