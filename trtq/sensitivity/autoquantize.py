"""ModelOpt AutoQuantize's own per-layer scores, read back as a trtq sensitivity table.

`mtq.auto_quantize` calibrates every candidate format, scores each of its layer groups x format
(gradient: sum over tokens of (dL/dY * dY)^2; kl_div: KL of the output distribution with one group
quantized), then picks formats by linear programming under an `effective_bits` (weight-size)
constraint. trtq keeps the scores and drops the pick: its ILP plans with the same scores under the
latency budgets AutoQuantize cannot express.

What is read back is the searcher's `candidate_stats[group]["scores"]`, exactly what its LP
minimises: after its monotone pass over the formats ordered by compression (a format never scores
worse than a more compressed one, `score = min(score, previous)`). AutoQuantize groups q/k/v and
gate/up as TensorRT-LLM fuses them, which is how trtq groups them; a group's score is split over its
members in proportion to their weight size, so the members' Omega sum to the searcher's score and
the planner (which sums members) sees AutoQuantize's number. Each member's own score before the
monotone pass is kept as `raw_score` when the scores were computed in this run (a run restored from
an AutoQuantize checkpoint has only the group scores).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from trtq.artifacts.layers import LayerGraph
from trtq.errors import InputError
from trtq.registry.formats import Format

SCORES = ("gradient", "kl_div")
Option = tuple[str, "int | None"]  # (trtq format name, group size)


def format_config(fmt: Format, group_size: int | None) -> dict[str, Any]:
    """The format's ModelOpt preset (a deep copy) with its weight blocks set to `group_size`."""
    from trtq.quantize.quant_cfg import WEIGHT_QUANTIZER, _preset, _with_group_size

    cfg = _preset(fmt)
    if group_size is not None:
        for entry in cfg["quant_cfg"]:
            if entry.get("quantizer_name") == f"*{WEIGHT_QUANTIZER}":
                entry["cfg"] = _with_group_size(entry["cfg"], group_size)
    return cfg


def layer_options(graph: LayerGraph, formats: list[Format]) -> dict[str, tuple[Option, ...]]:
    """Each layer's quantized candidates (format, group size); bf16 is AutoQuantize's implicit no-quant."""
    return {
        layer.name: tuple(
            (f.name, f.group_size_for(layer.in_features))
            for f in formats
            if f.quantized and f.available_for(layer.in_features)
        )
        for layer in graph.layers
    }


@dataclass
class SearchSpace:
    """auto_quantize's quantization_formats, module_search_spaces and disabled_layers for a graph."""

    quantization_formats: list[dict]
    module_search_spaces: list[dict]
    disabled_layers: list[str]
    configs: dict[Option, dict]  # every candidate's ModelOpt config


def check_formats(graph: LayerGraph, formats: list[Format]) -> dict[str, tuple[Option, ...]]:
    """Each layer's candidates, or a one-line refusal; from the graph alone, so before a model loads."""
    import torch

    if any(not f.modelopt_on_cpu for f in formats) and not torch.cuda.is_available():
        names = ", ".join(f.name for f in formats if not f.modelopt_on_cpu)
        raise InputError(
            f"AutoQuantize calibrates {names} with ModelOpt, which needs a CUDA GPU for it; "
            "pass --formats without it on this machine"
        )
    options = layer_options(graph, formats)
    if not any(options.values()):
        raise InputError(
            f"no layer of {graph.model} can take any of the formats "
            f"{', '.join(f.name for f in formats)}: nothing for AutoQuantize to score"
        )
    return options


def search_space(model, graph: LayerGraph, formats: list[Format]) -> SearchSpace:
    """Layers whose candidates differ (INT4 group 64 where 128 does not divide) get their own search space.

    The most common candidate list is the global one; every other list is a module_search_spaces
    entry naming its layers exactly. Linear modules outside the graph (lm_head unless included)
    and layers with no quantized candidate are disabled, as NVIDIA's hf_ptq.py disables lm_head.
    """
    import torch

    from trtq.registry import get_format

    options = check_formats(graph, formats)
    configs = {opt: format_config(get_format(opt[0]), opt[1]) for opts in options.values() for opt in opts}
    by_options: dict[tuple[Option, ...], list[str]] = {}
    for layer, opts in options.items():
        if opts:
            by_options.setdefault(opts, []).append(layer)
    common = Counter({opts: len(layers) for opts, layers in by_options.items()}).most_common(1)[0][0]
    spaces = [
        {"module_name_patterns": layers, "quantization_formats": [configs[o] for o in opts]}
        for opts, layers in by_options.items()
        if opts != common
    ]
    searched = {layer for opts, layers in by_options.items() for layer in layers}
    disabled = sorted(
        name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name not in searched
    )
    return SearchSpace([configs[o] for o in common], spaces, disabled, configs)


@dataclass
class AutoQuantizeRun:
    state: dict  # the searcher's state_dict (candidate_stats, best, ...)
    options: dict[str, Option]  # recipe signature -> (format, group size)
    raw_scores: dict[tuple[str, Option], float] = field(default_factory=dict)
    seconds: float = 0.0  # the whole auto_quantize call
    scoring_seconds: float | None = None  # its estimate_sensitivity_scores (None: restored)


@contextlib.contextmanager
def _timed_scoring(searcher_cls, spent: dict):
    """Time the searcher's scoring pass (the calibration of each format runs before it)."""
    original = searcher_cls.estimate_sensitivity_scores

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent["scoring"] = time.perf_counter() - started

    searcher_cls.estimate_sensitivity_scores = timed
    try:
        yield
    finally:
        searcher_cls.estimate_sensitivity_scores = original


def recipe_option(recipe, options: dict[str, Option]) -> Option:
    """trtq's (format, group size) of an AutoQuantize recipe; its no-quant recipe is bf16."""
    from modelopt.torch.quantization.algorithms import QuantRecipe

    if recipe == QuantRecipe(quant_cfg=None):
        return ("bf16", None)
    try:
        return options[recipe.checkpoint_signature]
    except KeyError:
        raise InputError(f"AutoQuantize recipe {recipe} is none of the formats asked for") from None


def run_autoquantize(
    model,
    graph: LayerGraph,
    formats: list[Format],
    batches,
    score: str = "gradient",
    batch_size: int = 4,
    checkpoint: str | None = None,
    effective_bits: float = 16.0,
    verbose: bool = False,
    loss_scale: float = 1.0,
) -> AutoQuantizeRun:
    """mtq.auto_quantize on a copy of `model` with trtq's formats; every batch calibrates and scores.

    `batches` ([n, seq_len] token ids) are cut into steps of `batch_size` windows. `checkpoint`:
    ModelOpt's own search checkpoint (a later call with the same path reuses its scores).
    `loss_scale` (gradient score only) multiplies the loss, so every score by its square: no ranking
    changes, but ModelOpt's LP (CBC) treats objectives of ~1e-6 as equal and can return any feasible
    pick when the scores are that small (a tiny random model's are).
    """
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization import algorithms
    from modelopt.torch.quantization.algorithms import QuantRecipe

    if score not in SCORES:
        raise InputError(f"unknown AutoQuantize score {score!r}; known: {', '.join(SCORES)}")
    if batch_size < 1:
        raise InputError(f"AutoQuantize batch size must be at least 1, got {batch_size}")
    space = search_space(model, graph, formats)
    options = {
        QuantRecipe(cfg, name=f"{opt[0]}_g{opt[1]}").checkpoint_signature: opt for opt, cfg in space.configs.items()
    }
    loader = [batches[i : i + batch_size] for i in range(0, batches.shape[0], batch_size)]
    if score == "gradient":
        step = {
            "forward_step": lambda m, ids: m(input_ids=ids, labels=ids),
            "loss_func": lambda output, ids: output.loss * loss_scale,
        }
        searcher_cls = algorithms.AutoQuantizeGradientSearcher
    else:
        step = {"forward_step": lambda m, ids: m(input_ids=ids).logits}
        searcher_cls = algorithms.AutoQuantizeKLDivSearcher
    work = copy.deepcopy(model)
    spent: dict[str, float] = {}
    started = time.perf_counter()
    with _timed_scoring(searcher_cls, spent), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "custom quantization formats ... may not be optimal": they are ours
        with contextlib.redirect_stdout(None) if not verbose else contextlib.nullcontext():
            work, state = mtq.auto_quantize(
                work,
                constraints={"effective_bits": effective_bits},
                quantization_formats=space.quantization_formats,
                module_search_spaces=space.module_search_spaces or None,
                data_loader=loader,
                disabled_layers=space.disabled_layers or None,
                num_calib_steps=len(loader),
                num_score_steps=len(loader),
                method=score,
                checkpoint=checkpoint,
                verbose=verbose,
                **step,
            )
    seconds = time.perf_counter() - started
    raw = {}
    if "scoring" in spent:
        raw = _member_scores(work, graph, options)
    del work
    return AutoQuantizeRun(
        state=state, options=options, raw_scores=raw, seconds=seconds, scoring_seconds=spent.get("scoring")
    )


def _member_scores(model, graph: LayerGraph, options: dict[str, Option]) -> dict[tuple[str, Option], float]:
    """Each layer's own score per recipe, before the group sum and the monotone pass."""
    modules = dict(model.named_modules())
    names = {id(module): name for name, module in modules.items()}
    raw: dict[tuple[str, Option], float] = {}
    for layer in graph.layers:
        module = modules.get(layer.name)
        getter = getattr(module, "get_hparam", None)
        if getter is None:
            continue
        with contextlib.suppress(AttributeError, KeyError):
            hparam = getter("quant_recipe")
            for recipe, per_module in hparam._importance_dict.items():
                option = recipe_option(recipe, options)
                for score_module, value in per_module.items():
                    if names.get(id(score_module)) == layer.name and value is not None:
                        raw[layer.name, option] = float(value.detach().float().sum())
    return raw


def autoquantize_table_rows(
    graph: LayerGraph, formats: list[Format], run: AutoQuantizeRun, weight_errors: dict[tuple[str, str], float]
):
    """(rows, groups): trtq sensitivity rows from the searcher's candidate_stats, and those stats per group.

    A layer AutoQuantize did not search (no quantized candidate) gets a bf16 row of Omega 0.
    """
    from trtq.artifacts.sensitivity import SensitivityRow

    layers = {layer.name: layer for layer in graph.layers}
    omega: dict[tuple[str, Option], float] = {}
    groups = []
    for group_name, stats in run.state["candidate_stats"].items():
        members = [m for m in stats["module_names"] if m in layers]
        if not members:
            continue  # a disabled module outside the graph (lm_head)
        sizes = {m: layers[m].in_features * layers[m].out_features for m in members}
        total = sum(sizes.values())
        entry = {"name": group_name, "members": list(stats["module_names"]), "options": []}
        for recipe, score, cost in zip(stats["formats"], stats["scores"], stats["costs"]):
            option = recipe_option(recipe, run.options)
            entry["options"].append(
                {
                    "format": option[0],
                    "group_size": option[1],
                    "score": float(score),
                    "cost": float(cost),
                    "effective_bits": float(recipe.compression * 16),
                }
            )
            for m in members:
                omega[m, option] = float(score) * sizes[m] / total
        groups.append(entry)
    rows = []
    for layer in graph.layers:
        for fmt in formats:
            if not fmt.available_for(layer.in_features):
                continue
            option = (fmt.name, fmt.group_size_for(layer.in_features))
            value = omega.get((layer.name, option))
            if value is None:
                if fmt.quantized:
                    raise InputError(f"AutoQuantize returned no score for {layer.name} in {fmt.name}")
                value = 0.0
            rows.append(
                SensitivityRow(
                    layer=layer.name,
                    format=fmt.name,
                    group_size=option[1],
                    weight_error=weight_errors[layer.name, fmt.name],
                    omega=value,
                    raw_score=run.raw_scores.get((layer.name, option)),
                )
            )
    return rows, groups
