"""Peak memory and time of sensitivity, whole model vs block-sequential (trtq sensitivity --method output).

Each measurement runs in a fresh Python process (`--child`) that reports its own peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss) and time; the floor is a process that imports torch and
transformers and does nothing else. Models: the embedded SmolLM2-135M, and (--depths) random-weight
Llama-shaped models built from a config (hidden 1024, seeded, saved as safetensors in a temporary
directory) at several depths, so the growth of peak memory and time with depth is seen.

    python benchmarks/scale.py [--depths 4,8,16] [--samples 2] [--seq-len 128]

Last line: rss_ratio_smollm2=<sequential / whole-model peak RSS> and, with --depths,
rss_ratio_deep_shallow=<sequential peak RSS at the deepest / shallowest model> time_ratio_deep_shallow=<...>.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = "fp8,int8_sq,int4_awq"


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    import torch  # noqa: F401
    import transformers  # noqa: F401

    if args.child != "floor":
        from trtq.sensitivity.api import checkpoint_dir_for, output_sensitivity

        tokenizer = None
        if args.tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        sequential = args.child == "sequential"
        out = Path(tempfile.mkdtemp()) / "s.json"
        table = output_sensitivity(args.model, args.samples, args.seq_len, 0, tokenizer=tokenizer, formats=FORMATS,
                                   sequential=sequential, checkpoint_dir=checkpoint_dir_for(str(out)))
        assert table.rows
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"peak_rss_bytes": usage.ru_maxrss * 1024, "seconds": time.perf_counter() - started,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime}))


def measure(mode: str, model: str, args: argparse.Namespace, tokenizer: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--model", model, "--samples", str(args.samples),
               "--seq-len", str(args.seq_len)] + (["--tokenizer", tokenizer] if tokenizer else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def synthetic_model(directory: Path, blocks: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=blocks, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=2048, architectures=["LlamaForCausalLM"])
    model = AutoModelForCausalLM.from_config(config)
    path = directory / f"llama-1024x{blocks}"
    model.save_pretrained(path, safe_serialization=True)
    return path


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("floor", "whole", "sequential"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokenizer")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--depths", default="", help="comma-separated block counts of random Llama-shaped models")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    floor = measure("floor", "-", args)
    print(f"floor (python + torch + transformers imported): {gib(floor['peak_rss_bytes'])}")
    print("| model | method | peak RSS | above floor | seconds |")
    print("| --- | --- | --- | --- | --- |")
    rows = {}
    for mode in ("whole", "sequential"):
        m = measure(mode, "smollm2-135m", args)
        rows[mode] = m
        print(f"| smollm2-135m | {mode} | {gib(m['peak_rss_bytes'])} | "
              f"{gib(m['peak_rss_bytes'] - floor['peak_rss_bytes'])} | {m['seconds']:.1f} |", flush=True)
    summary = f"rss_ratio_smollm2={rows['sequential']['peak_rss_bytes'] / rows['whole']['peak_rss_bytes']:.3f}"
    depths = [int(d) for d in args.depths.split(",") if d]
    if depths:
        from trtq.model.zoo import resolve_model, weights_directory

        tokenizer = str(weights_directory(resolve_model("smollm2-135m")))
        deep = {}
        with tempfile.TemporaryDirectory() as tmp:
            for blocks in depths:
                path = synthetic_model(Path(tmp), blocks)
                # The whole-model path loads the tokenizer from the model's directory: give it SmolLM2's.
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(tokenizer).save_pretrained(path)
                for mode in ("whole", "sequential"):
                    m = measure(mode, str(path), args, tokenizer)
                    deep[blocks, mode] = m
                    print(f"| llama 1024 x {blocks} blocks | {mode} | {gib(m['peak_rss_bytes'])} | "
                          f"{gib(m['peak_rss_bytes'] - floor['peak_rss_bytes'])} | {m['seconds']:.1f} |", flush=True)
        lo, hi = min(depths), max(depths)
        summary += (f" rss_ratio_deep_shallow={deep[hi, 'sequential']['peak_rss_bytes'] / deep[lo, 'sequential']['peak_rss_bytes']:.3f}"
                    f" time_ratio_deep_shallow={deep[hi, 'sequential']['seconds'] / deep[lo, 'sequential']['seconds']:.3f}"
                    f" whole_rss_ratio_deep_shallow={deep[hi, 'whole']['peak_rss_bytes'] / deep[lo, 'whole']['peak_rss_bytes']:.3f}")
    print(summary)


if __name__ == "__main__":
    main()
