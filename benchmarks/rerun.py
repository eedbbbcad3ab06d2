"""What a `trtq run` re-run costs: with nothing changed (goal: under 10% of the cold run) and with one setting changed.

Runs `python -m trtq run PIPELINE` three times into one fresh output root (the pipeline's own `output` is replaced
by a temporary directory): cold, again with nothing changed, and again with the first budget loosened by 0.05
(which redoes the fronts and what follows; layers, profiles and sensitivity stay cached). Each run is a separate
process, so a re-run pays what a user's does: interpreter start, imports, reading the pipeline, checking every
unit's key. Prints one table row per run: wall time, its fraction of the cold run, units ran / cached / skipped.

    python benchmarks/rerun.py                          # a quick SmolLM2 pipeline (FP8, two GPUs, short windows)
    python benchmarks/rerun.py examples/smollm2.yaml    # the demo's pipeline (many minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "schema_version": 1, "model": "smollm2-135m", "gpus": [{"name": "H200"}, {"name": "B200"}],
    "profile": {"backend": "roofline", "tokens": [16, 2048], "launch_cost_ns": 0},
    "plan": {"budgets": ["decode@16=0.7", "prefill@2048=0.9"], "pareto": 3, "formats": "bf16,fp8"},
    "sensitivity": {"method": "weight", "formats": "bf16,fp8"},
    "quality": {"max_ppl_increase": 5.0, "seq_len": 64, "windows": 2, "calib_samples": 2},
    "quantize": {"enabled": False},
}
COUNTS = re.compile(r"(\d+) unit\(s\) ran, (\d+) cached, (\d+) skipped")


def timed_run(pipeline: Path) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trtq", "run", str(pipeline)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"trtq run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    found = COUNTS.search(done.stderr)
    return seconds, "/".join(found.groups()) if found else "?"


def loosened(budget: str) -> str:
    """`decode@16=0.7` -> `decode@16=0.75`: one setting changed (a fraction budget; absolute ones kept)."""
    point, value = budget.split("=", 1)
    try:
        return f"{point}={float(value) + 0.05:g}"
    except ValueError:
        sys.exit(f"benchmarks/rerun.py changes the first budget, which must be a fraction of all-bf16: {budget}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", help="pipeline file (default: a quick SmolLM2 pipeline)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="trtq-rerun-") as tmp:
        data = yaml.safe_load(Path(args.pipeline).read_text()) if args.pipeline else dict(QUICK)
        data["output"] = str(Path(tmp) / "out")
        pipeline = Path(tmp) / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump(data))
        rows.append(("cold run", *timed_run(pipeline)))
        rows.append(("no change", *timed_run(pipeline)))
        budgets = list(data["plan"]["budgets"])
        change = f"budget {budgets[0]} -> {loosened(budgets[0])}"
        data["plan"]["budgets"] = [loosened(budgets[0]), *budgets[1:]]
        pipeline.write_text(yaml.safe_dump(data))
        rows.append((change, *timed_run(pipeline)))
    cold = rows[0][1]
    print(f"pipeline: {args.pipeline or 'quick-smollm2 (benchmarks/rerun.py QUICK)'}")
    print("| run | wall s | fraction of cold | units ran/cached/skipped |")
    print("| --- | ---: | ---: | --- |")
    for name, seconds, counts in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / cold:.3f} | {counts} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
