"""`trtq predict PLAN | MODEL --uniform FORMAT --gpu GPU --workload isl=..,osl=..[,concurrency=..]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predicted TTFT, TPOT, throughput and KV capacity of a plan on a GPU",
                       description="Predict serving latency and throughput of a plan (or a uniform format) "
                                   "from measured kernel tables; see trtq/predict/step.py for the model.")
    p.add_argument("target", help="plan file (plan.yaml), or a model (alias, HF id, directory) with --uniform")
    p.add_argument("--uniform", metavar="FORMAT", help="every GEMM group in FORMAT (for a model)")
    p.add_argument("--gpu", help="target GPU from `trtq gpus` (default: the plan's)")
    p.add_argument("--workload", required=True, metavar="isl=N,osl=N[,concurrency=N]",
                   help="prompt and answer lengths in tokens, and requests in flight (default 1; "
                        "ignored with --max-throughput)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--kv-format", help="KV-cache format: bf16 (default) or fp8")
    p.add_argument("--max-throughput", action="store_true",
                   help="steady state at an infinite request rate (best batch and context chunk)")
    p.add_argument("--max-batch-size", type=int, default=None, help="runtime max batch size (default 512)")
    p.add_argument("--profile", metavar="FILE", help="GEMM latencies from this trtq profile instead of "
                                                      "aiconfigurator's tables")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_predict)


def _looks_like_plan(target: str) -> bool:
    from pathlib import Path

    path = Path(target)
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json")


def run_predict(args: argparse.Namespace) -> int:
    import json

    from trtq.errors import InputError
    from trtq.predict.api import PredictRequest, predict
    from trtq.predict.step import MAX_BATCH_SIZE, parse_workload

    if args.max_batch_size is not None and args.max_batch_size < 1:
        raise InputError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    request = PredictRequest(parse_workload(args.workload), tp=args.tp,
                             kv_format=args.kv_format.strip().lower() if args.kv_format else None,
                             max_throughput=args.max_throughput,
                             max_batch_size=args.max_batch_size or MAX_BATCH_SIZE, profile=args.profile)
    if _looks_like_plan(args.target):
        if args.uniform:
            raise InputError("--uniform applies to a model, not to a plan file")
        result = predict(plan=args.target, gpu=args.gpu, request=request)
    else:
        if not args.uniform:
            raise InputError(f"{args.target!r} is not a plan file; for a model give --uniform FORMAT")
        result = predict(args.target, uniform=args.uniform, gpu=args.gpu, request=request)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _print(result)
    return 0


def _print(r: dict) -> None:
    w = r["workload"]
    what = f"uniform {r['uniform']}" if "uniform" in r else f"plan {r['plan']}"
    mode = "max throughput" if r["mode"] == "max_throughput" else f"concurrency {r['concurrency']}"
    print(f"{r['model']} ({what}, KV {r['kv_format']}) on {r['gpu']} x TP{r['tp']}: "
          f"isl {w['isl']}, osl {w['osl']}, {mode}")
    print(f"  TTFT {r['ttft_ms']:.1f} ms   TPOT {r['tpot_ms']:.2f} ms   request {r['request_latency_ms'] / 1e3:.2f} s")
    print(f"  output {r['output_tokens_per_s']:.0f} tokens/s ({r['output_tokens_per_s_per_gpu']:.0f} per GPU) "
          f"at {r['in_flight']} in flight, {r['ctx_tokens_per_step']} context tokens per step")
    m = r["memory"]
    print(f"  memory: weights {m['weight_bytes'] / 1e9:.1f} GB, KV budget {m['kv_budget_bytes'] / 1e9:.1f} GB "
          f"-> at most {r['max_concurrency']} sequences of {w['isl'] + w['osl']} tokens")
    print("  time: " + ", ".join(f"{k} {v:.0%}" for k, v in r["time_breakdown"].items() if v >= 0.005))
    print(f"  provenance: measured {r['measured_share']:.0%}, interpolated {r['interpolated_share']:.0%}, "
          f"extrapolated {r['extrapolated_share']:.0%}, modelled {r['modelled_share']:.0%} ({r['gemm_source']})")
    for note in r["notes"]:
        print(f"  note: {note}")
