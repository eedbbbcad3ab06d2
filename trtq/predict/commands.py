"""`trtq predict PLAN | MODEL --uniform FORMAT --gpu GPU --workload isl=..,osl=..[,concurrency=..]`."""

from __future__ import annotations

import argparse

from trtq.predict.request import PredictRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predicted TTFT, TPOT, throughput and KV capacity of a plan on a GPU",
        description="Predict serving latency and throughput of a plan (or a uniform format) "
        "from measured kernel tables; see trtq/predict/step.py for the model.",
    )
    p.add_argument("target", help=PredictRequest.model_fields["target"].description)
    add_options(p, PredictRequest, *(name for name in PredictRequest.model_fields if name != "target"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    import json

    from trtq.predict.api import predict

    result = predict(PredictRequest.from_args(args))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _print(result)
    return 0


def _print(r: dict) -> None:
    w = r["workload"]
    what = f"uniform {r['uniform']}" if "uniform" in r else f"plan {r['plan']}"
    mode = "max throughput" if r["mode"] == "max_throughput" else f"concurrency {r['concurrency']}"
    print(
        f"{r['model']} ({what}, KV {r['kv_format']}) on {r['gpu']} x TP{r['tp']}: "
        f"isl {w['isl']}, osl {w['osl']}, {mode}"
    )
    print(f"  TTFT {r['ttft_ms']:.1f} ms   TPOT {r['tpot_ms']:.2f} ms   request {r['request_latency_ms'] / 1e3:.2f} s")
    print(
        f"  output {r['output_tokens_per_s']:.0f} tokens/s ({r['output_tokens_per_s_per_gpu']:.0f} per GPU) "
        f"at {r['in_flight']} in flight, {r['ctx_tokens_per_step']} context tokens per step"
    )
    m = r["memory"]
    print(
        f"  memory: weights {m['weight_bytes'] / 1e9:.1f} GB, KV budget {m['kv_budget_bytes'] / 1e9:.1f} GB "
        f"-> at most {r['max_concurrency']} sequences of {w['isl'] + w['osl']} tokens"
    )
    print("  time: " + ", ".join(f"{k} {v:.0%}" for k, v in r["time_breakdown"].items() if v >= 0.005))
    print(
        f"  provenance: measured {r['measured_share']:.0%}, interpolated {r['interpolated_share']:.0%}, "
        f"extrapolated {r['extrapolated_share']:.0%}, modelled {r['modelled_share']:.0%} ({r['gemm_source']})"
    )
    for note in r["notes"]:
        print(f"  note: {note}")
