"""lm-evaluation-harness on an in-memory model, with per-task degradation thresholds.

The model goes to lm-eval through its Python API (HFLM wrapping the loaded
model), so a fake-quantized ModelOpt model is scored as it is. Hub datasets
cannot be downloaded on every machine: the shipped task `trtq_devil_definitions`
(trtq/data/devil_definitions.yaml + .jsonl) runs offline anywhere.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from importlib import resources
from typing import Any

from trtq.errors import InputError, MissingToolError

LOCAL_TASK = "trtq_devil_definitions"
# Percent relative drop of the task's accuracy that still passes.
DEFAULT_THRESHOLDS: dict[str, float] = {"mmlu": 3.0, "hellaswag": 2.0, "gsm8k": 5.0, LOCAL_TASK: 5.0}
FALLBACK_THRESHOLD = 5.0
# The metric the gate reads, in order of preference, from lm-eval's results per task.
_METRICS = ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,flexible-extract", "exact_match,none")


def parse_task_spec(spec: str) -> dict[str, float]:
    """'mmlu,hellaswag=1.5' -> {task: threshold percent}; defaults from DEFAULT_THRESHOLDS."""
    tasks: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if not name:
            raise InputError(f"--lm-eval: empty task name in {spec!r}")
        if value:
            try:
                threshold = float(value)
            except ValueError:
                raise InputError(f"--lm-eval: threshold for {name} is not a number: {value!r}") from None
            if not 0 <= threshold < float("inf"):  # NaN fails this too
                raise InputError(f"--lm-eval: threshold for {name} must be a finite number >= 0, got {value!r}")
        else:
            threshold = DEFAULT_THRESHOLDS.get(name, FALLBACK_THRESHOLD)
        tasks[name] = threshold
    if not tasks:
        raise InputError(f"--lm-eval: no task named in {spec!r}")
    return tasks


def local_task_config() -> dict[str, Any]:
    """The shipped task as a config dict, its data file as an absolute path."""
    import yaml

    data = resources.files("trtq.data")
    config = yaml.safe_load(data.joinpath("devil_definitions.yaml").read_text(encoding="utf-8"))
    config["dataset_kwargs"]["data_files"]["test"] = str(data.joinpath("devil_definitions.jsonl"))
    return config


def _task_entries(names: list[str]) -> list[Any]:
    return [local_task_config() if name == LOCAL_TASK else name for name in names]


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MissingToolError("lm-evaluation-harness is not installed: pip install lm-eval==0.4.13") from None
    return lm_eval, HFLM


def evaluate_tasks(
    model: Any, tokenizer: Any, tasks: list[str], limit: int | None = None, batch_size: int = 8
) -> dict[str, tuple[str, float, int]]:
    """{task: (metric, value, samples)} for the in-memory `model`, offline."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lm_eval, HFLM = _import_lm_eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=batch_size)
    # lm-eval logs per request and prints tables; the gate reports for itself.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            output = lm_eval.simple_evaluate(
                model=lm,
                tasks=_task_entries(tasks),
                limit=limit,
                log_samples=False,
                bootstrap_iters=0,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
    except (KeyError, ValueError, FileNotFoundError, ConnectionError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"lm-eval could not run {', '.join(tasks)}: {first}") from None
    if output is None or "results" not in output:
        raise InputError(f"lm-eval returned no results for {', '.join(tasks)}")
    results = {}
    for name in tasks:
        task_results = output["results"].get(name)
        if task_results is None:
            raise InputError(f"lm-eval has no result for task {name!r} (unknown task, or a group without one)")
        metric = next((m for m in _METRICS if m in task_results), None)
        if metric is None:
            raise InputError(
                f"lm-eval task {name!r} reports none of the metrics the gate reads ({', '.join(_METRICS)})"
            )
        samples = output.get("n-samples", {}).get(name, {})
        count = int(samples.get("effective", samples.get("original", 0)) or 0)
        results[name] = (metric.split(",")[0], float(task_results[metric]), count)
    return results


def degradation(reference: float, quantized: float) -> float:
    """Relative drop as a fraction; 0 when the reference scored 0 (nothing to lose)."""
    return (reference - quantized) / reference if reference > 0 else 0.0
