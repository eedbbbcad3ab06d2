"""A plan -> one ModelOpt `quant_cfg`: an ordered list, later entries override earlier ones.

The list is: disable every quantizer; ModelOpt's own default exclusions (routers,
BatchNorm, vision towers ...); then, for every planned layer in plan order, one
weight-quantizer and one input-quantizer entry taken from its format's ModelOpt
preset (INT4 block size replaced by the plan's group size), or two `enable: False`
entries for a bf16 layer. The per-layer entries come last, as in ModelOpt's own
`get_auto_quantize_config`, so a layer the plan quantizes (lm_head included) is
quantized even where a default exclusion would match it. KV-cache quantizers
(`*[kv]_bmm_quantizer`) are enabled only when the plan chose a quantized KV-cache format
(`plan.kv_format`): then ModelOpt's own KV preset's entries (`KV_CACHE_PRESETS`) come last.

ModelOpt 0.47 has one calibration algorithm per `mtq.quantize` call, applied to
every enabled quantizer (awq_lite would AWQ-scale FP8 and INT8 layers too;
smoothquant would leave FP8 input quantizers per-channel). So the plan is
calibrated in stages, one per algorithm, each over only the layers whose format
asks for it: `calibration_stages(plan)`.

A plan (or a bare layer assignment) is checked once, by `resolve_plan`, into a `ResolvedPlan`
that every step of the stage takes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trtq.artifacts.plan import Plan
from trtq.errors import InputError, UnknownNameError, UnsupportedError
from trtq.registry.formats import Format, get_format

# The quantizers of a Linear that a per-layer entry sets.
WEIGHT_QUANTIZER = "weight_quantizer"
INPUT_QUANTIZER = "input_quantizer"

# Calibration algorithm per format, as its ModelOpt preset names it, and the order
# stages run in: weight-rewriting smoothing first, plain max calibration last.
_STAGE_ORDER = ("smoothquant", "awq_lite", "max")


def _preset(fmt: Format) -> dict[str, Any]:
    """A deep copy of the format's ModelOpt preset (the format owns it: Format.modelopt_preset)."""
    return fmt.modelopt_preset()


def _preset_entry(preset: dict[str, Any], quantizer: str) -> dict[str, Any]:
    """The preset's `*<quantizer>` entry without its name: {'cfg': ...} or {'enable': ...}."""
    for entry in preset["quant_cfg"]:
        if entry.get("quantizer_name") == f"*{quantizer}" and "parent_class" not in entry:
            return {k: v for k, v in entry.items() if k != "quantizer_name"}
    raise InputError(f"ModelOpt preset has no '*{quantizer}' entry")


def _with_group_size(cfg: Any, group_size: int) -> Any:
    """The quantizer cfg with every block size along the last axis set to `group_size`.

    W4A8's weight cfg is a list (INT4 blocks, then per-tensor FP8): only blocked stages change.
    """
    if isinstance(cfg, list):
        return [_with_group_size(c, group_size) for c in cfg]
    cfg = dict(cfg)
    blocks = cfg.get("block_sizes")
    if blocks:
        blocks = dict(blocks)
        blocks.pop("-1", None)
        blocks[-1] = group_size
        cfg["block_sizes"] = blocks
    return cfg


def format_entries(fmt: Format, group_size: int | None) -> dict[str, dict[str, Any]]:
    """{'weight_quantizer': {...}, 'input_quantizer': {...}} (without names) for one format."""
    if not fmt.quantized:
        return {WEIGHT_QUANTIZER: {"enable": False}, INPUT_QUANTIZER: {"enable": False}}
    preset = _preset(fmt)
    entries = {q: _preset_entry(preset, q) for q in (WEIGHT_QUANTIZER, INPUT_QUANTIZER)}
    if fmt.block_sizes:
        if group_size is None:
            raise InputError(f"format {fmt.name} needs a group size and the plan gives none")
        entries[WEIGHT_QUANTIZER]["cfg"] = _with_group_size(entries[WEIGHT_QUANTIZER]["cfg"], group_size)
    return entries


def format_algorithm(fmt: Format) -> str | None:
    """The calibration method of the format's ModelOpt preset; None for bf16."""
    if not fmt.quantized:
        return None
    algorithm = _preset(fmt).get("algorithm")
    method = algorithm.get("method") if isinstance(algorithm, dict) else algorithm
    return method or "max"


def _format_algorithm_cfg(fmt: Format) -> Any:
    return _preset(fmt).get("algorithm") or "max"


# What `trtq quantize` applies: a plan, or {layer: (format name, group size)} as
# `Plan.layer_formats()` returns it (the benchmark builds those for AutoQuantize's plans).
Assignment = Mapping[str, tuple[str, "int | None"]]


@dataclass(frozen=True)
class ResolvedPlan:
    """A plan or assignment checked once: its layers with their formats and group sizes, in plan order."""

    layers: tuple[tuple[str, Format, int | None], ...]  # (layer, format, group size)
    kv_format: str | None  # the plan's KV-cache format (None: not planned)
    source: Plan | Assignment  # what was resolved, as given (written beside the export)


# The quantize stage's functions take any of these and resolve it once (a ResolvedPlan passes through).
PlanInput = Plan | Assignment | ResolvedPlan


def _check_group_size(where: str, fmt: Format, group_size: int | None, in_features: int | None) -> None:
    if fmt.block_sizes:
        if group_size is None:
            raise InputError(f"{where}: format {fmt.name} needs a group_size")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
            raise InputError(f"{where}: group_size must be a positive integer, got {group_size!r}")
        if in_features is not None and in_features % group_size:
            raise InputError(f"{where}: group_size {group_size} does not divide its input width {in_features}")
    elif group_size is not None:
        raise InputError(f"{where}: format {fmt.name} takes no group_size (got {group_size})")


def resolve_plan(plan: PlanInput) -> ResolvedPlan:
    """The plan's (layer, format, group size) in plan order, checked: known format, group size where it
    belongs, every layer once."""
    if isinstance(plan, ResolvedPlan):
        return plan
    rows: list[tuple[str, str, int | None, int | None, str]]
    if isinstance(plan, Plan):
        rows = [
            (m, g.format, g.group_size, g.in_features, f"plan group {g.group}") for g in plan.groups for m in g.members
        ]
        empty = [g.group for g in plan.groups if not g.members]
        if empty:
            raise InputError(f"plan group {empty[0]} has no member layers")
    else:
        rows = []
        for layer, choice in plan.items():
            if not isinstance(choice, (tuple, list)) or len(choice) != 2:
                raise InputError(f"layer {layer}: expected (format, group_size), got {choice!r}")
            rows.append((layer, choice[0], choice[1], None, f"layer {layer}"))
    layers: list[tuple[str, Format, int | None]] = []
    seen: set[str] = set()
    for layer, format_name, group_size, in_features, where in rows:
        try:
            fmt = get_format(str(format_name))
        except UnknownNameError as exc:
            raise InputError(f"{where}: {exc}") from None
        _check_group_size(where, fmt, group_size, in_features)
        if layer in seen:
            raise InputError(f"plan names layer {layer} more than once")
        seen.add(layer)
        layers.append((layer, fmt, group_size))
    if not layers:
        raise InputError("plan has no layers")
    return ResolvedPlan(tuple(layers), plan.kv_format if isinstance(plan, Plan) else None, plan)


def _default_exclusions() -> list[dict[str, Any]]:
    """ModelOpt's standard exclusions, as every preset carries them after its own entries."""
    preset = _preset(get_format("fp8"))
    own = {"*", f"*{WEIGHT_QUANTIZER}", f"*{INPUT_QUANTIZER}"}
    return [e for e in preset["quant_cfg"] if e.get("quantizer_name") not in own or "parent_class" in e]


def layer_pattern(layer: str, quantizer: str, experts: bool = False) -> str:
    # The leading '*' keeps the pattern valid when the model is wrapped (a prefix on every name).
    # Fused experts (ModelOpt's _QuantFusedExperts) carry `<param>_input_quantizer` and per-expert
    # `<param>_weight_quantizers.<e>`, which ModelOpt matches as `<param>_weight_quantizer`.
    return f"*{layer}_{quantizer}" if experts else f"*{layer}.{quantizer}"


# ModelOpt 0.47's SmoothQuant and AWQ calibrate quantized nn.Linear layers only (model_calib.smoothquant /
# awq_lite test is_quantized_linear); fused experts get per-expert weight quantizers calibrated by max alone.
EXPERT_CALIBRATIONS = frozenset({"max"})


# Measured 2026-12 (tests/quantize/test_moe_quantize.py): ModelOpt 0.47's export_hf_checkpoint of a model whose
# quantization includes AWQ resmooths each MoE block's experts through get_experts_list, which indexes
# `module.experts` as a list of expert modules and fails on transformers 5's fused experts ("object of type
# 'QuantMixtralExperts' has no len()"), whatever format the experts themselves are in.
EXPORT_FAILS_WITH_FUSED_EXPERTS = frozenset({"awq_lite"})


def moe_expert_layers(plan: PlanInput) -> frozenset[str]:
    """The members of a plan's MoE groups (fused expert parameters); none for a layer assignment."""
    from trtq.model.families import MOE_GROUP_KIND

    source = resolve_plan(plan).source
    if not isinstance(source, Plan):
        return frozenset()
    return frozenset(m for g in source.groups if g.kind == MOE_GROUP_KIND for m in g.members)


def check_expert_formats(plan: PlanInput, expert_layers: frozenset[str] | set[str]) -> None:
    """Refuse, in one line, what ModelOpt cannot do with fused MoE experts: an expert layer in a format whose
    calibration it applies to nn.Linear only, or AWQ anywhere in a model with fused experts (export fails)."""
    if not expert_layers:
        return
    refused: dict[str, list[str]] = {}
    breaking: dict[str, list[str]] = {}
    methods: dict[str, str] = {}
    for layer, fmt, _ in resolve_plan(plan).layers:
        method = format_algorithm(fmt)
        if method in EXPORT_FAILS_WITH_FUSED_EXPERTS:
            breaking.setdefault(fmt.name, []).append(layer)
        if layer in expert_layers and method is not None and method not in EXPERT_CALIBRATIONS:
            refused.setdefault(fmt.name, []).append(layer)
            methods[fmt.name] = method
    for name, layers in breaking.items():
        raise UnsupportedError(
            f"the plan puts {len(layers)} layers in {name} (e.g. {layers[0]}) in a model with fused MoE experts: "
            f"ModelOpt 0.47's checkpoint export of {format_algorithm(get_format(name))} scales expects a list of "
            "expert modules and fails on transformers 5's fused experts; re-plan without " + ", ".join(breaking)
        )
    for name, layers in refused.items():
        from trtq.registry.formats import FORMATS

        usable = [f.name for f in FORMATS.values() if f.quantized and format_algorithm(f) in EXPERT_CALIBRATIONS]
        raise UnsupportedError(
            f"the plan puts {len(layers)} fused MoE expert layers in {name} (e.g. {layers[0]}), whose calibration "
            f"({methods[name]}) ModelOpt applies to nn.Linear layers only, not to fused experts: re-plan the "
            f"experts in {', '.join(usable)} or bf16"
        )


# KV-cache format -> ModelOpt's KV-cache preset (modelopt.torch.quantization.config: FP8_KV_CFG quantizes K and
# V per tensor to e4m3; NVFP4_KV_CFG to e2m1 in dynamic blocks of 16 with e4m3 scales, CUDA only).
KV_CACHE_PRESETS: dict[str, str] = {"fp8": "FP8_KV_CFG", "nvfp4": "NVFP4_KV_CFG"}
# Measured 2026-11 (DESIGN.md): ModelOpt's dynamic block quantization asserts a CUDA amax: NVFP4 needs a GPU.
KV_CACHE_NEEDS_CUDA = frozenset({"nvfp4"})
# ModelOpt's KV-cache quantizers in its quantized attention: k_bmm_quantizer and v_bmm_quantizer.
KV_QUANTIZER_SUFFIXES = ("k_bmm_quantizer", "v_bmm_quantizer")


def kv_cache_entries(kv_format: str | None) -> list[dict[str, Any]]:
    """The quant_cfg entries of a KV-cache format (none for bf16/None), deep-copied from ModelOpt's preset."""
    import modelopt.torch.quantization as mtq

    if kv_format in (None, "bf16"):
        return []
    name = KV_CACHE_PRESETS.get(kv_format)
    if name is None:
        raise InputError(
            f"no ModelOpt KV-cache preset for KV format {kv_format!r} (known: {', '.join(KV_CACHE_PRESETS)})"
        )
    preset = getattr(mtq, name, None)
    if not isinstance(preset, dict):
        raise InputError(f"this ModelOpt has no KV-cache preset {name} for KV format {kv_format}")
    return copy.deepcopy(preset["quant_cfg"])


def build_quant_cfg(plan: PlanInput, expert_layers: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The plan as one ModelOpt quantize config: {'quant_cfg': [...], 'algorithm': None}. It inserts and
    configures the quantizers without calibrating: calibration runs per algorithm, `calibration_stages`.

    `expert_layers`: the plan's layers that are fused expert parameters ([experts, out, in]), not Linears."""
    resolved = resolve_plan(plan)
    quant_cfg: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    quant_cfg.extend(_default_exclusions())
    cache: dict[tuple[str, int | None], dict[str, dict[str, Any]]] = {}
    for layer, fmt, group_size in resolved.layers:
        key = (fmt.name, group_size)
        if key not in cache:
            cache[key] = format_entries(fmt, group_size)
        for quantizer in (WEIGHT_QUANTIZER, INPUT_QUANTIZER):
            quant_cfg.append(
                {
                    "quantizer_name": layer_pattern(layer, quantizer, layer in expert_layers),
                    **copy.deepcopy(cache[key][quantizer]),
                }
            )
    quant_cfg.extend(kv_cache_entries(resolved.kv_format))
    return {"quant_cfg": quant_cfg, "algorithm": None}


def calibration_stages(plan: PlanInput) -> list[tuple[Any, list[str]]]:
    """[(algorithm cfg, layers it calibrates)], one stage per algorithm the plan's formats use."""
    stages: dict[str, tuple[Any, list[str]]] = {}
    for layer, fmt, _ in resolve_plan(plan).layers:
        method = format_algorithm(fmt)
        if method is None:
            continue
        stages.setdefault(method, (_format_algorithm_cfg(fmt), []))[1].append(layer)
    unknown = [m for m in stages if m not in _STAGE_ORDER]
    order = [m for m in _STAGE_ORDER if m in stages] + unknown
    return [stages[m] for m in order]
