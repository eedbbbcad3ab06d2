"""trtq's step model against aiconfigurator's own TensorRT-LLM estimate, uniform plans.

Both rest on the same measured tables (aiconfigurator-core, TensorRT-LLM, same framework
version per system). For the shipped Llama-3.1-8B and -70B configs, uniform bf16 and fp8
plans (and nvfp4 on B200), on H100, H200 and B200 at TP 1 and 2, at eight workloads from
short to long context, this prints

  * max throughput: aiconfigurator's best agg point (`find_best_agg_result_under_constraints`,
    no SLOs, max batch 512) against trtq's `StepModel.max_throughput` (output tokens/s);
  * TTFT and TPOT at aiconfigurator's chosen point (same batch and context tokens per step),
    so the step model is compared at one operating point and not through a near-tie of the
    batch search;
  * a mixed-plan check: the higher format in the first k of the blocks, the lower in the rest,
    must move monotonically between the two uniform plans (Llama-3.1-8B bf16/fp8 on H100,
    Llama-3.1-70B fp8/nvfp4 on B200, TP1).

KV cache: bf16 with bf16 plans, fp8 with fp8 and nvfp4 plans. Last line:
`median_ratio_throughput=<x> max_abs_dev=<y>` — the median trtq/aiconfigurator
throughput ratio, and the largest |ratio - 1| over throughput, TTFT and TPOT.

    nice -n 5 .venv/bin/python benchmarks/step_model.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time

from trtq.model.zoo import resolve_model
from trtq.predict.architecture import decoder_architecture
from trtq.predict.kernels import AicKernels
from trtq.predict.step import StepModel, Workload
from trtq.registry import get_gpu

MODELS = {"llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B", "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B"}
GPUS = {"H100-SXM": ("bf16", "fp8"), "H200": ("bf16", "fp8"), "B200": ("bf16", "fp8", "nvfp4")}
WORKLOADS = [(128, 128), (512, 256), (1024, 1024), (2048, 128), (2048, 512), (4096, 256), (8192, 512), (16384, 256)]
KV_FOR = {"bf16": "bf16", "fp8": "fp8", "nvfp4": "fp8"}
MAX_BATCH = 512


def aic_best(model_path: str, system: str, version: str, fmt: str, tp: int, isl: int, osl: int):
    from aiconfigurator_core.sdk import common, config
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database

    db = get_database(system, "trtllm", version)
    gemm = {"bf16": common.GEMMQuantMode.bfloat16, "fp8": common.GEMMQuantMode.fp8,
            "nvfp4": common.GEMMQuantMode.nvfp4}[fmt]
    kv = {"bf16": common.KVCacheQuantMode.bfloat16, "fp8": common.KVCacheQuantMode.fp8}[KV_FOR[fmt]]
    mc = config.ModelConfig(tp_size=tp, gemm_quant_mode=gemm, kvcache_quant_mode=kv,
                            fmha_quant_mode=common.FMHAQuantMode.bfloat16)
    model = get_model(model_path, mc, "trtllm")
    backend = get_backend("trtllm")
    rc = config.RuntimeConfig(batch_size=1, beam_width=1, isl=isl, osl=osl, ttft=1e12, tpot=1e12)
    summary = backend.find_best_agg_result_under_constraints(model, db, rc, max_batch_size=MAX_BATCH)
    df = summary.get_summary_df()
    if df is None or df.empty:
        return None
    row = df.iloc[0]
    return {"tokens_s": float(row["tokens/s"]), "bs": int(row["bs"]), "ctx": int(row["ctx_tokens"]),
            "ttft": float(row["ttft"]), "tpot": float(row["tpot"])}


def trtq_step(model: str, gpu: str, fmt: str, tp: int, kernels: AicKernels, formats=None) -> StepModel:
    resolved = resolve_model(model)
    arch = decoder_architecture(resolved.name, resolved.config)
    formats = formats or {g.name: fmt for g in arch.groups}
    return StepModel(arch, formats, KV_FOR[fmt], tp, kernels, get_gpu(gpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three workloads, Llama-3.1-8B only")
    args = parser.parse_args()
    logging.disable(logging.WARNING)   # aiconfigurator's lane-order warnings
    models = {"llama-3.1-8b": MODELS["llama-3.1-8b"]} if args.quick else MODELS
    workloads = WORKLOADS[::3] if args.quick else WORKLOADS
    start = time.perf_counter()
    ratios_tp, devs, gaps = [], [], []
    header = (f"{'model':14} {'gpu':8} {'tp':>2} {'fmt':5} {'isl':>6} {'osl':>5} | {'aic tok/s':>9} {'trtq tok/s':>10} "
              f"{'ratio':>6} | {'bs':>4} {'ctx':>6} | {'TTFT aic':>9} {'trtq':>9} | {'TPOT aic':>8} {'trtq':>8}")
    print(header)
    print("-" * len(header))
    for gpu, fmts in GPUS.items():
        for model, path in models.items():
            for tp in (1, 2):
                kernels = AicKernels(gpu, scope=f"{model}-tp{tp}")
                for fmt in fmts:
                    step = trtq_step(model, gpu, fmt, tp, kernels)
                    for isl, osl in workloads:
                        w = Workload(isl, osl)
                        ref = aic_best(path, kernels.system, kernels.version, fmt, tp, isl, osl)
                        mine = step.max_throughput(w, MAX_BATCH)
                        label = f"{model:14} {gpu:8} {tp:>2} {fmt:5} {isl:>6} {osl:>5}"
                        if ref is None or mine is None:
                            agree = (ref is None) == (mine is None)
                            print(f"{label} | {'OOM' if ref is None else round(ref['tokens_s'])!s:>9} "
                                  f"{'OOM' if mine is None else round(mine.output_tokens_per_s)!s:>10} "
                                  f"{'agree' if agree else 'DISAGREE':>6} |")
                            if not agree:
                                gaps.append(f"{label}: one side does not fit")
                                devs.append(1.0)
                            continue
                        same = step.agg(ref["bs"], ref["ctx"], w)
                        r_tp = mine.output_tokens_per_s / ref["tokens_s"]
                        r_ttft = same.ttft_ms / ref["ttft"]
                        r_tpot = same.tpot_ms / ref["tpot"]
                        ratios_tp.append(r_tp)
                        dev = max(abs(r_tp - 1), abs(r_ttft - 1), abs(r_tpot - 1))
                        devs.append(dev)
                        if dev > 0.05:
                            gaps.append(f"{label}: throughput x{r_tp:.3f}, TTFT x{r_ttft:.3f}, TPOT x{r_tpot:.3f}")
                        print(f"{label} | {ref['tokens_s']:>9.0f} {mine.output_tokens_per_s:>10.0f} {r_tp:>6.3f} | "
                              f"{ref['bs']:>4} {ref['ctx']:>6} | {ref['ttft']:>9.1f} {same.ttft_ms:>9.1f} | "
                              f"{ref['tpot']:>8.2f} {same.tpot_ms:>8.2f}")
                kernels.save()

    # Mixed plans: the lower format in the first k blocks, the higher elsewhere, between the uniform plans.
    w = Workload(2048, 256)
    monotonic = True
    for model, gpu, low, high, kv in (("llama-3.1-8b", "H100-SXM", "bf16", "fp8", "bf16"),
                                      ("llama-3.1-70b", "B200", "fp8", "nvfp4", "fp8")):
        print(f"\nmixed plans, {model} on {gpu} TP1, KV {kv}, isl 2048 osl 256: {high} in the first k blocks, "
              f"{low} in the rest; concurrency 32 and max throughput")
        kernels = AicKernels(gpu, scope=f"{model}-tp1")
        resolved = resolve_model(model)
        arch = decoder_architecture(resolved.name, resolved.config)
        series = []
        for k_blocks in [round(arch.num_layers * i / 4) for i in range(5)]:
            formats = {g.name: (high if g.block < k_blocks else low) for g in arch.groups}
            step = StepModel(arch, formats, kv, 1, kernels, get_gpu(gpu))
            at32 = step.at_concurrency(32, w)
            best = step.max_throughput(w, MAX_BATCH)
            series.append((k_blocks, at32.tpot_ms, at32.ttft_ms, best.output_tokens_per_s))
            print(f"  {high} blocks {k_blocks:>2}/{arch.num_layers}: TPOT@32 {at32.tpot_ms:6.2f} ms  "
                  f"TTFT@32 {at32.ttft_ms:7.1f} ms  max {best.output_tokens_per_s:7.0f} tok/s")
        kernels.save()
        for i, name in ((1, "TPOT@32"), (2, "TTFT@32"), (3, "max tok/s")):
            values = [s[i] for s in series]
            inc = all(b >= a for a, b in zip(values, values[1:]))
            dec = all(b <= a for a, b in zip(values, values[1:]))
            monotonic &= inc or dec
            print(f"  {name}: {'monotonic' if inc or dec else 'NOT monotonic'}")
    print(f"mixed plans monotonic: {monotonic}")

    print(f"\n{len(ratios_tp)} cases compared in {time.perf_counter() - start:.0f} s; "
          f"{len(gaps)} beyond 5%:")
    for g in gaps:
        print(f"  {g}")
    median = statistics.median(ratios_tp) if ratios_tp else math.nan
    print(f"median_ratio_throughput={median:.4f} max_abs_dev={max(devs) if devs else math.nan:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
