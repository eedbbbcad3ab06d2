"""Peak memory and time of sensitivity as a model deepens: whole model vs block-sequential.

Each measurement runs in a fresh Python process (`--child MODE`) that reports its own peak RSS
(VmHWM in /proc/self/status), wall and CPU seconds; the floor is a process that imports
torch, transformers and ModelOpt's quantization and does nothing else. Modes:

    output-whole       trtq sensitivity --method output               (the whole model loaded)
    output-sequential  trtq sensitivity --method output --sequential  (one decoder block at a time)
    weight-whole       trtq sensitivity --method weight               (the whole model loaded)
    weight-sequential  trtq sensitivity --method weight --sequential  (one weight tensor at a time)
    fisher-whole, fisher-sequential, hessian-whole, hessian-sequential  the same for Fisher and Hessian
                       (the sequential ones give the whole-model table; Hessian with --hessian-probes probes)
    quantize-whole     trtq quantize's library path on the loaded model: FP8, INT8-SQ and INT4-AWQ in turn
                       over the groups (MoE experts FP8), calibrated and exported (hf/ and trtllm/)
    quantize-sequential the same plan with --sequential: blocks offloaded (to disk on a CPU), ModelOpt's
                       layerwise calibration and streaming export (hf/ only)
    eval-whole         trtq eval --checkpoint of that plan's export (made once per model, not measured): the
                       reference loaded and the checkpoint rebuilt beside it, --samples windows of --seq-len
    eval-sequential    the same with --sequential: both models one decoder block at a time

Models: seeded random Llama-shaped models built from a config (hidden 1024, intermediate 2816, vocab
49152, tied embeddings; saved as safetensors in a temporary directory) at each of --depths, and one
Mixtral-shaped MoE (hidden 1024, 8 experts of intermediate 1408, top-2; --moe-blocks deep). A peak
varies from run to run (glibc's arenas, thread timing): each cell runs --repeats times and the table
gives the largest and smallest peak and the median seconds.

    python benchmarks/scale.py [--depths 8,16,32] [--repeats 2] [--samples 2] [--seq-len 128] [--modes M,...]
                               [--max-shard-size 256MB]  (the quantize modes' export files)
                               [--device cuda --dtype bfloat16]  (the GPU's peak memory too)

Then a projection (arithmetic on the configs, labelled as such) of what block-sequential sensitivity
holds in memory for Llama-3.1-8B and -70B, and of its CPU time from the measured cost per block.

Last line: rss_ratio_32_8=<largest output-sequential peak at the deepest / at the shallowest model>
time_ratio_32_8=<its median seconds, deepest / shallowest> (and the same for weight-sequential).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trtq.options import parse_byte_size

FORMATS = "fp8,int8_sq,int4_awq"
MODES = ("output-whole", "output-sequential", "weight-whole", "weight-sequential", "fisher-whole", "fisher-sequential",
         "hessian-whole", "hessian-sequential", "quantize-whole", "quantize-sequential", "eval-whole",
         "eval-sequential")
LLAMA_1024 = dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=16,
                  vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)
MIXTRAL_1024 = dict(hidden_size=1024, intermediate_size=1408, num_attention_heads=16, num_key_value_heads=8,
                    num_local_experts=8, num_experts_per_tok=2, vocab_size=49152, tie_word_embeddings=True,
                    max_position_embeddings=2048)


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    import modelopt.torch.quantization  # noqa: F401  (trtq's reference quantizers import it: ~0.3 GiB)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    if args.child.startswith("quantize-"):
        quantize(args.model, args.child == "quantize-sequential", args)
    elif args.child.startswith("eval-"):
        from trtq.eval.gate import evaluate
        from trtq.eval.request import EvalRequest

        request = EvalRequest(model=args.model, checkpoint=args.checkpoint, seq_len=args.seq_len,
                              windows=args.samples, max_ppl_increase=1e6, device=args.device, dtype=args.dtype,
                              sequential=args.child == "eval-sequential")
        assert evaluate(request).ppl_quant > 0
    elif args.child != "floor":
        from trtq.sensitivity.api import (
            checkpoint_dir_for,
            fisher_sensitivity,
            hessian_sensitivity,
            output_sensitivity,
            weight_sensitivity,
        )

        method, how = args.child.split("-")
        sequential = how == "sequential"
        placement = {"device": args.device, "dtype": args.dtype}
        if method == "weight":
            table = weight_sensitivity(args.model, FORMATS, sequential=sequential, **placement)
        else:
            tokenizer = None
            if args.tokenizer:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
            common = dict(tokenizer=tokenizer, formats=FORMATS, sequential=sequential, **placement)
            if method == "hessian":
                table = hessian_sensitivity(args.model, args.samples, args.seq_len, 0,
                                            max_iterations=args.hessian_probes, **common)
            else:
                compute = {"output": output_sensitivity, "fisher": fisher_sensitivity}[method]
                out = Path(tempfile.mkdtemp()) / "s.json"
                table = compute(args.model, args.samples, args.seq_len, 0,
                                checkpoint_dir=checkpoint_dir_for(str(out)), **common)
        assert table.rows
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cuda_peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes(), "seconds": time.perf_counter() - started,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime, "cuda_peak_bytes": cuda_peak}))


def quantize(model: str, sequential: bool, args: argparse.Namespace) -> None:
    """What `trtq quantize [--sequential]` does, on an assignment rotating FORMATS over the layer groups."""
    from trtq.data import CALIBRATION_PATH, read_text_file, token_batches
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.quantize.apply import export_checkpoint, quantize_model
    from trtq.registry import get_format

    resolved = resolve_model(model)
    formats = [get_format(name) for name in FORMATS.split(",")]
    assignment = {}
    for index, group in enumerate(build_layer_graph(resolved).groups):
        # ModelOpt calibrates fused experts by max only: experts in FP8
        fmt = formats[0] if group.kind == "moe" else formats[index % len(formats)]
        assignment.update({m: (fmt.name, fmt.group_size_for(group.in_features)) for m in group.members})
    with tempfile.TemporaryDirectory() as work:
        loaded, tokenizer = load_pretrained(resolved, dtype=args.dtype, device=args.device,
                                            offload_folder=Path(work) / "offload" if sequential else None)
        batches = token_batches(tokenizer, read_text_file(CALIBRATION_PATH), args.samples, args.seq_len, 0)
        quantize_model(loaded, assignment, batches, layerwise=sequential)
        out = export_checkpoint(loaded, tokenizer, assignment, Path(args.checkpoint or Path(work) / "out"),
                                model_name=resolved.name, max_shard_size=args.max_shard_size)
        assert (out / "hf" / "hf_quant_config.json").is_file()


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: on Linux that survives
    fork and exec, so a child reports its parent's peak when the parent's was larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(mode: str, model: str, args: argparse.Namespace, tokenizer: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--model", model, "--samples", str(args.samples),
               "--seq-len", str(args.seq_len), "--device", args.device, "--dtype", args.dtype,
               "--hessian-probes", str(args.hessian_probes)]
    command += ["--max-shard-size", str(args.max_shard_size)] if args.max_shard_size else []
    command += ["--tokenizer", tokenizer] if tokenizer else []
    command += ["--checkpoint", args.checkpoint] if mode.startswith("eval-") else []
    runs = []
    for _ in range(args.repeats):
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    peaks = [r["peak_rss_bytes"] for r in runs]
    cuda = [r["cuda_peak_bytes"] for r in runs if r.get("cuda_peak_bytes") is not None]
    return {"peak_max": max(peaks), "peak_min": min(peaks), "seconds": statistics.median(r["seconds"] for r in runs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs), "cuda_peak": max(cuda) if cuda else None}


def synthetic_model(path: Path, blocks: int, moe: bool, tokenizer: str) -> None:
    """A seeded random model saved as safetensors, with SmolLM2's tokenizer (the whole-model path loads one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MixtralConfig

    torch.manual_seed(0)
    if moe:
        config = MixtralConfig(num_hidden_layers=blocks, architectures=["MixtralForCausalLM"], **MIXTRAL_1024)
    else:
        config = LlamaConfig(num_hidden_layers=blocks, architectures=["LlamaForCausalLM"], **LLAMA_1024)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(path)


def block_parameters(config: dict) -> int:
    """Weights of one decoder block's GEMMs (attention and MLP or experts), from a HF config."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    experts = config.get("num_local_experts", 1)
    return attention + experts * 3 * hidden * config["intermediate_size"]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def projection(per_block_cpu_s: float, measured_config: dict, args: argparse.Namespace) -> None:
    """What block-sequential output sensitivity holds and costs for real models: arithmetic, not measured."""
    from trtq.model.zoo import resolve_model

    print("\nProjection (arithmetic on the configs, not a measurement): block-sequential `--method output`, "
          f"{args.samples} windows x {args.seq_len} tokens, 3 formats")
    print("| model | blocks | one block bf16 | one block fp32 | hidden-state cache fp32 | embeddings bf16 | "
          "CPU time (this machine, from the measured cost per block) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    measured = block_parameters(measured_config)
    for alias in ("llama-3.1-8b", "llama-3.1-70b"):
        config = resolve_model(alias).config
        params = block_parameters(config)
        blocks = config["num_hidden_layers"]
        # in and out of the block, every window
        cache = 2 * args.samples * args.seq_len * config["hidden_size"] * 4
        embeddings = config["vocab_size"] * config["hidden_size"] * 2
        cpu_hours = per_block_cpu_s * params / measured * blocks / 3600
        print(f"| {alias} | {blocks} | {gib(params * 2)} | {gib(params * 4)} | {gib(cache)} | {gib(embeddings)} | "
              f"{cpu_hours:.1f} h |")
    print("On one H100 (80 GB) either model's block, cache and embeddings fit many times over, so one GPU runs "
          "the block-sequential pass for both; the whole-model methods need the model resident on one device "
          "(trtq does not spread a model over several GPUs): 16 GB (8B, bf16) fits one H100, 141 GB (70B) does "
          "not, so on 8xH100 the 70B runs block-sequential only. GPU time is not projected: no GPU was lent "
          "(scripts/gpu-check.sh measures a CUDA per-block cost).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("floor", *MODES))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokenizer")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--depths", default="8,16,32", help="comma-separated block counts of random Llama-shaped models")
    parser.add_argument("--moe-blocks", type=int, default=4, help="blocks of the Mixtral-shaped model (0: none)")
    parser.add_argument("--device", default="cpu", help="where sensitivity runs (cuda: its peak GPU memory too)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default: all)")
    parser.add_argument("--hessian-probes", type=int, default=2, help="Hutchinson probes of the hessian modes")
    parser.add_argument("--max-shard-size", type=parse_byte_size,
                        help="quantize modes: the export's largest safetensors file (default: trtq quantize's)")
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)  # (internal) where quantize writes, eval reads
    parser.add_argument("--make", help=argparse.SUPPRESS)  # (internal) build a synthetic model at this path
    parser.add_argument("--make-blocks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--moe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.make:
        synthetic_model(Path(args.make), args.make_blocks, args.moe, args.tokenizer)
        return
    from trtq.model.zoo import resolve_model, weights_directory

    floor = measure("floor", "-", args)
    print(f"floor (python + torch + transformers + modelopt.torch.quantization imported): {gib(floor['peak_max'])}")
    cuda = args.device.startswith("cuda")
    print("| model | mode | peak RSS (largest) | smallest | seconds (median) | s per block | CPU s |"
          + (" peak GPU memory |" if cuda else ""))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if cuda else ""))
    tokenizer = str(weights_directory(resolve_model("smollm2-135m")))
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from {', '.join(MODES)}")
    results = {}
    depths = sorted(int(d) for d in args.depths.split(",") if d)
    models = [(blocks, False) for blocks in depths] + ([(args.moe_blocks, True)] if args.moe_blocks else [])
    with tempfile.TemporaryDirectory() as tmp:
        for blocks, moe in models:
            # Built in a process of its own: nothing of it stays in this one.
            path = Path(tmp) / f"{'mixtral' if moe else 'llama'}-1024x{blocks}"
            subprocess.run([sys.executable, __file__, "--make", str(path), "--make-blocks", str(blocks),
                            "--tokenizer", tokenizer] + (["--moe"] if moe else []), check=True, capture_output=True)
            args.checkpoint = str(path / "checkpoint") if any(m.startswith("eval-") for m in modes) else None
            if args.checkpoint:  # the eval modes' checkpoint: the quantize modes' plan, exported once
                subprocess.run([sys.executable, __file__, "--child", "quantize-whole", "--model", str(path),
                                "--samples", str(args.samples), "--seq-len", str(args.seq_len), "--checkpoint",
                                args.checkpoint], check=True, capture_output=True)
            for mode in modes:
                m = measure(mode, str(path), args, tokenizer)
                results[blocks, moe, mode] = m
                label = f"{'mixtral 1024 (8 experts)' if moe else 'llama 1024'} x {blocks} blocks"
                cuda = f" | {gib(m['cuda_peak'])}" if m["cuda_peak"] is not None else ""
                print(f"| {label} | {mode} | {gib(m['peak_max'])} | {gib(m['peak_min'])} | {m['seconds']:.1f} | "
                      f"{m['seconds'] / blocks:.2f} | {m['cpu_seconds']:.1f}{cuda} |", flush=True)
    lo, hi = depths[0], depths[-1]
    summary = []
    for mode in modes:
        method, how = mode.split("-")
        deep, shallow = results[hi, False, mode], results[lo, False, mode]
        suffix = "" if mode == "output-sequential" else f"_{method}" + ("_whole" if how == "whole" else "")
        summary.append(f"rss_ratio_{hi}_{lo}{suffix}={deep['peak_max'] / shallow['peak_max']:.3f}")
        summary.append(f"time_ratio_{hi}_{lo}{suffix}={deep['seconds'] / shallow['seconds']:.3f}")
    if "output-sequential" in modes:
        deep, shallow = results[hi, False, "output-sequential"], results[lo, False, "output-sequential"]
        per_block_cpu = (deep["cpu_seconds"] - shallow["cpu_seconds"]) / (hi - lo)
        print(f"\noutput-sequential: {per_block_cpu:.2f} CPU s per added block (from {lo} to {hi} blocks)")
        projection(per_block_cpu, dict(LLAMA_1024, num_hidden_layers=hi), args)
    print(" ".join(summary))


if __name__ == "__main__":
    main()
