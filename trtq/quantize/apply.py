"""Apply a plan with ModelOpt: insert quantizers, calibrate stage by stage, export the checkpoint.

Library functions (torch and modelopt are imported here, never by `commands.py`):
  * `quantize_model(model, plan, calib_batches)`: `mtq.quantize` in place with the plan's
    `quant_cfg`, then one `mtq.calibrate` per algorithm over only the layers that use it;
  * `export_checkpoint(model, tokenizer, plan, out_dir)`: engines/NAME/ with hf/, trtllm/,
    plan.yaml and quantize_summary.json, written beside the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trtq.artifacts import make_metadata, save_artifact
from trtq.artifacts.io import InputRef, atomic_write_text, sha256_file
from trtq.artifacts.paths import make_temp_beside, replace_directory
from trtq.artifacts.plan import Plan
from trtq.artifacts.quantize import LayerQuantization, QuantizerState, QuantizeSummary
from trtq.errors import InputError, UnsupportedError, storage_errno, write_error
from trtq.model.families import TRTLLM_DECODER_TYPES  # noqa: E402  (per model_type, from the family adapters)
from trtq.quantize.offload import (
    STREAMING_SHARD_SIZE,
    is_offloaded,
    offloaded_calibration,
    offloaded_export,
    unquantized_tensors_to_bf16,
)
from trtq.quantize.quant_cfg import (
    INPUT_QUANTIZER,
    KV_CACHE_NEEDS_CUDA,
    KV_QUANTIZER_SUFFIXES,
    WEIGHT_QUANTIZER,
    PlanInput,
    ResolvedPlan,
    build_quant_cfg,
    calibration_stages,
    check_expert_formats,
    resolve_plan,
)

_NAMES_SHOWN = 6


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def check_exportable(plan: PlanInput) -> None:
    """Refuse, in one line, a plan with a format trtq plans but cannot quantize and export (its export_refusal)."""
    by_format: dict[str, list[str]] = {}
    refusals: dict[str, str] = {}
    for layer, fmt, _ in resolve_plan(plan).layers:
        if fmt.export_refusal:
            by_format.setdefault(fmt.name, []).append(layer)
            refusals[fmt.name] = fmt.export_refusal
    for name, layers in by_format.items():
        raise UnsupportedError(
            f"the plan puts {len(layers)} layers in {name} ({_name_list(layers)}), which trtq "
            f"plans but does not quantize: {refusals[name]}; re-plan without {name}"
        )


def check_runnable_here(plan: PlanInput, cuda_available: bool | None = None) -> None:
    """Refuse, in one line, a plan whose formats ModelOpt quantizes only on a GPU this machine lacks
    (or a format trtq does not export at all: check_exportable)."""
    plan = resolve_plan(plan)
    check_exportable(plan)
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return
    if plan.kv_format in KV_CACHE_NEEDS_CUDA:
        raise UnsupportedError(
            f"the plan's KV cache is {plan.kv_format}, which ModelOpt quantizes only on a "
            "CUDA GPU (dynamic block quantization) and this machine has none: run trtq quantize "
            "on a GPU machine or re-plan with --kv-formats bf16,fp8"
        )
    by_format: dict[str, list[str]] = {}
    for layer, fmt, _ in plan.layers:
        if not fmt.modelopt_on_cpu:
            by_format.setdefault(fmt.name, []).append(layer)
    if by_format:
        parts = [f"{len(layers)} layers in {name} ({_name_list(layers)})" for name, layers in by_format.items()]
        raise UnsupportedError(
            "the plan puts " + "; ".join(parts) + ", which ModelOpt quantizes only on a CUDA GPU "
            "and this machine has none: run trtq quantize on a GPU machine or re-plan without " + ", ".join(by_format)
        )


def _fused_expert_weight(modules: dict[str, Any], layer: str) -> Any:
    """The [experts, out, in] parameter a plan layer names (transformers 5's fused MoE experts), or None."""
    parent, _, leaf = layer.rpartition(".")
    param = getattr(modules.get(parent), leaf, None) if parent in modules else None
    return param if getattr(param, "dim", lambda: 0)() == 3 else None


def expert_layers(plan: ResolvedPlan, model: Any) -> frozenset[str]:
    """The plan's layers that are fused expert parameters of `model`, not modules."""
    modules = dict(model.named_modules())
    return frozenset(
        layer
        for layer, _, _ in plan.layers
        if layer not in modules and _fused_expert_weight(modules, layer) is not None
    )


def check_plan_matches_model(plan: ResolvedPlan, model: Any) -> None:
    """Every planned layer is a Linear (or fused expert parameter) of this model, and its group size divides
    its input width."""
    import torch

    modules = dict(model.named_modules())
    for layer, fmt, group_size in plan.layers:
        module = modules.get(layer)
        experts = _fused_expert_weight(modules, layer) if module is None else None
        if module is None and experts is None:
            raise InputError(f"plan layer {layer} is not a module of this model")
        if module is not None and not isinstance(module, torch.nn.Linear):
            raise InputError(f"plan layer {layer} is a {type(module).__name__}, not a Linear layer")
        in_features = module.in_features if module is not None else int(experts.shape[-1])
        if group_size is not None and in_features % group_size:
            raise InputError(
                f"plan layer {layer}: {fmt.name} group size {group_size} does not divide its input width {in_features}"
            )


def _tensor_quantizers(module: Any) -> list[Any]:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [m for m in module.modules() if isinstance(m, TensorQuantizer)]


def layer_quantizers(modules: dict[str, Any], layer: str, kind: str | None = None) -> list[Any]:
    """The TensorQuantizers of one plan layer (`kind`: weight_quantizer or input_quantizer only): a Linear's,
    or, for a fused expert parameter, ModelOpt's `<param>_input_quantizer` and `<param>_weight_quantizers[e]`."""
    if layer in modules:
        module = modules[layer]
        return _tensor_quantizers(module if kind is None else getattr(module, kind))
    parent, _, leaf = layer.rpartition(".")
    found = []
    for name, child in modules[parent].named_children():
        if name.startswith(f"{leaf}_") and (kind is None or name.removesuffix("s") == f"{leaf}_{kind}"):
            found += _tensor_quantizers(child)
    return found


@contextlib.contextmanager
def _only_enabled(model: Any, layers: Iterable[str]):
    """Disable every enabled quantizer outside `layers` for the block; re-enable them after."""
    modules = dict(model.named_modules())
    keep = {id(q) for layer in layers for q in layer_quantizers(modules, layer)}
    paused = [q for q in _tensor_quantizers(model) if q.is_enabled and id(q) not in keep]
    for quantizer in paused:
        quantizer.disable()
    try:
        yield
    finally:
        for quantizer in paused:
            quantizer.enable()


def forward_loop_over(batches: Any, batch_size: int = 4):
    """A ModelOpt forward_loop over a [samples, seq_len] LongTensor of token ids."""
    import torch

    if batches is None or getattr(batches, "ndim", 0) != 2 or batches.shape[0] < 1:
        raise InputError("calibration batches must be a non-empty [samples, seq_len] tensor of token ids")

    def loop(model: Any) -> None:
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, batches.shape[0], batch_size):
                model(batches[start : start + batch_size].to(device))

    return loop


def _stage_algorithm(algorithm: Any, layerwise: bool) -> Any:
    """A calibration stage's ModelOpt algorithm, with layerwise (block by block) calibration when asked.

    Only max calibration leaves the weights as they are: telling ModelOpt so spares it writing every
    calibrated block back to its offload (which, for a disk-offloaded block, ModelOpt 0.47 keeps in RAM)."""
    algorithm = copy.deepcopy(algorithm)
    if not layerwise:
        return algorithm
    if isinstance(algorithm, str):
        algorithm = {"method": algorithm}
    algorithm["layerwise"] = {"enable": True, "calib_mutates_weights": algorithm.get("method", "max") != "max"}
    return algorithm


def quantize_model(
    model: Any, plan: PlanInput, calib_batches: Any, batch_size: int = 4, *, layerwise: bool = False
) -> Any:
    """Quantize `model` in place as the plan says (fake quantization) and return it.

    One `mtq.quantize` inserts and configures every quantizer from `build_quant_cfg(plan)`
    without calibrating; then each calibration algorithm the plan's formats use runs over
    only its own layers (SmoothQuant for int8_sq, AWQ-lite for INT4/W4A8, max for FP8),
    because one ModelOpt algorithm applied to a mixed model would treat every layer alike.

    `layerwise`: each stage calibrates one decoder block at a time on its cached inputs (ModelOpt's
    layerwise calibration; the inputs are the unquantized model's, as in a whole-model pass), so a
    model whose blocks are offloaded (`load_pretrained(offload_folder=...)`) holds one block on the device.
    """
    import modelopt.torch.quantization as mtq

    plan = resolve_plan(plan)
    check_runnable_here(plan)
    check_plan_matches_model(plan, model)
    experts = expert_layers(plan, model)
    check_expert_formats(plan, experts)
    if experts and hasattr(model, "set_experts_implementation"):
        # ModelOpt's _QuantFusedExperts quantizes per expert by intercepting F.linear: the eager experts
        # forward calls it, transformers' batched_mm / grouped_mm kernels do not.
        model.set_experts_implementation("eager")
    loop = forward_loop_over(calib_batches, batch_size)
    config = build_quant_cfg(plan, experts)
    model.eval()
    with _quiet_modelopt(), offloaded_calibration() if layerwise else contextlib.nullcontext():
        mtq.quantize(model, config, forward_loop=None)
        for algorithm, layers in calibration_stages(plan):
            with _only_enabled(model, layers):
                mtq.calibrate(model, algorithm=_stage_algorithm(algorithm, layerwise), forward_loop=loop)
        kv_quantizers = kv_cache_quantizers(model)
        if kv_quantizers:
            # The KV-cache scales (max calibration, as ModelOpt's KV presets), over the planned model.
            # Only the KV quantizers run here: a second max pass over the layers would overwrite the
            # AWQ/SmoothQuant calibration of their own stages.
            with _only_enabled(model, kv_quantizers):
                mtq.calibrate(model, algorithm=_stage_algorithm("max", layerwise), forward_loop=loop)
    _check_applied(model, plan)
    return model


def kv_cache_quantizers(model: Any) -> list[str]:
    """Names of the enabled KV-cache quantizers ModelOpt inserted (empty when the KV cache stays bf16)."""
    return [
        name
        for name, module in model.named_modules()
        if name.endswith(KV_QUANTIZER_SUFFIXES) and getattr(module, "is_enabled", False)
    ]


@contextlib.contextmanager
def _quiet_modelopt():
    """ModelOpt prints per-module notes and warns per skipped module; keep the terminal to trtq."""
    import io
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # stderr too: its layerwise calibration draws a tqdm bar there
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


def _check_applied(model: Any, plan: ResolvedPlan) -> None:
    """What the model now carries agrees with the plan, layer by layer (a wrong pattern would not)."""
    kv = plan.kv_format
    if kv not in (None, "bf16") and not kv_cache_quantizers(model):
        raise UnsupportedError(
            f"the plan's KV cache is {kv} but ModelOpt inserted no KV-cache quantizers "
            f"({', '.join(KV_QUANTIZER_SUFFIXES)}) into this model's attention"
        )
    modules = dict(model.named_modules())
    for layer, fmt, _ in plan.layers:
        states = {q.is_enabled for q in layer_quantizers(modules, layer, WEIGHT_QUANTIZER)}
        if len(states) != 1:
            raise InputError(
                f"layer {layer}: ModelOpt inserted no weight quantizer, or per-expert weight "
                "quantizers that disagree, where the plan says " + fmt.name
            )
        weight_on = states.pop()
        if weight_on != fmt.quantized:
            raise InputError(
                f"layer {layer}: weight quantizer is {'on' if weight_on else 'off'} "
                f"after quantization, the plan says {fmt.name}"
            )


def _stats(tensor: Any) -> dict[str, Any] | None:
    if tensor is None:
        return None
    t = tensor.detach().float()
    return {"shape": list(t.shape), "min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}


def _quantizer_state(quantizer: Any) -> list[QuantizerState]:
    from modelopt.torch.quantization.nn import SequentialQuantizer

    stages = list(quantizer) if isinstance(quantizer, SequentialQuantizer) else [quantizer]
    states = []
    for q in stages:
        num_bits = q.num_bits
        block_sizes = q.block_sizes
        states.append(
            QuantizerState(
                enabled=bool(q.is_enabled),
                num_bits=list(num_bits) if isinstance(num_bits, (tuple, list)) else num_bits,
                axis=list(q.axis) if isinstance(q.axis, (tuple, list)) else q.axis,
                block_sizes={str(k): v for k, v in block_sizes.items()} if block_sizes else None,
                amax=_stats(getattr(q, "amax", None)) if q.is_enabled else None,
                pre_quant_scale=_stats(getattr(q, "pre_quant_scale", None)) if q.is_enabled else None,
            )
        )
    return states


def layer_summary(model: Any, plan: ResolvedPlan) -> list[LayerQuantization]:
    """Each layer's quantizers as calibrated; a fused expert layer lists its experts' weight quantizers in
    expert order (`experts` says how many) and its one shared input quantizer."""
    modules = dict(model.named_modules())
    summary = []
    for layer, fmt, group_size in plan.layers:
        if layer in modules:
            weight = _quantizer_state(getattr(modules[layer], WEIGHT_QUANTIZER))
            inputs = _quantizer_state(getattr(modules[layer], INPUT_QUANTIZER))
            experts = None
        else:
            parent, _, leaf = layer.rpartition(".")
            per_expert = getattr(modules[parent], f"{leaf}_{WEIGHT_QUANTIZER}s")
            weight = [state for quantizer in per_expert for state in _quantizer_state(quantizer)]
            inputs = _quantizer_state(getattr(modules[parent], f"{leaf}_{INPUT_QUANTIZER}"))
            experts = len(per_expert)
        summary.append(
            LayerQuantization(
                layer=layer,
                format=fmt.name,
                group_size=group_size,
                weight_quantizer=weight,
                input_quantizer=inputs,
                experts=experts,
            )
        )
    return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bf16_copy(model: Any) -> Any:
    """The exporters work on a bf16 copy: the model stays usable, and unquantized weights (bf16
    layers, embeddings, norms) are written in bf16 as TensorRT-LLM builds them, whatever dtype
    calibration ran in (float32 on CPU). Quantizer scales follow, as when calibrating in bf16."""
    import torch

    return copy.deepcopy(model).to(torch.bfloat16)


def _export_trtllm(model: Any, directory: Path) -> str | None:
    """TensorRT-LLM checkpoint where ModelOpt can write one; else the reason it cannot."""
    import torch
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    if is_offloaded(model):
        return (
            "no TensorRT-LLM checkpoint: the model was calibrated block by block (--sequential) and ModelOpt's "
            "TensorRT-LLM exporter needs the whole model in memory; hf/ is the checkpoint (TensorRT-LLM's "
            "PyTorch backend loads it)"
        )
    model_type = getattr(model.config, "model_type", None)
    decoder_type = TRTLLM_DECODER_TYPES.get(model_type)
    if decoder_type is None:
        return f"no TensorRT-LLM checkpoint: ModelOpt's exporter has no decoder type for model_type {model_type!r}"
    try:
        with _quiet_modelopt():
            export_tensorrt_llm_checkpoint(
                _bf16_copy(model),
                decoder_type=decoder_type,
                dtype=torch.bfloat16,
                export_dir=directory,
                inference_tensor_parallel=1,
                inference_pipeline_parallel=1,
            )
    except Exception as exc:  # ModelOpt raises bare Exceptions for unsupported combinations
        shutil.rmtree(directory, ignore_errors=True)
        if storage_errno(exc) is not None:  # a full disk is not "this model cannot export"
            raise write_error(directory, exc) from None
        return f"no TensorRT-LLM checkpoint: ModelOpt's export failed: {_first_line(exc)}"
    return None


def _export_hf(model: Any, tokenizer: Any, directory: Path, max_shard_size: int | None = None) -> None:
    """hf/: ModelOpt's unified checkpoint in bf16, files of at most `max_shard_size` bytes (default: ModelOpt's
    10GB; STREAMING_SHARD_SIZE for an offloaded model, whose export buffers one file)."""
    import torch
    from modelopt.torch.export import export_hf_checkpoint

    if not getattr(model.config, "architectures", None):
        # A GGUF-loaded config has none and ModelOpt's export needs it.
        model.config.architectures = [type(model).__name__]
    offloaded = is_offloaded(model)
    try:
        with _quiet_modelopt():
            if offloaded:  # ModelOpt's streaming export: one block in memory at a time
                with offloaded_export():
                    export_hf_checkpoint(
                        model,
                        dtype=torch.bfloat16,
                        export_dir=directory,
                        max_shard_size=max_shard_size or STREAMING_SHARD_SIZE,
                    )
                unquantized_tensors_to_bf16(directory)
            else:
                shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
                export_hf_checkpoint(_bf16_copy(model), dtype=torch.bfloat16, export_dir=directory, **shards)
    except Exception as exc:  # a ModelOpt failure is this plan failing to export: one line
        if storage_errno(exc) is not None:  # ... unless the disk refused the write
            raise write_error(directory, exc) from None
        raise UnsupportedError(f"ModelOpt could not export the Hugging Face checkpoint: {_first_line(exc)}") from None
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def export_checkpoint(
    model: Any,
    tokenizer: Any,
    plan: PlanInput,
    out_dir: str | os.PathLike[str],
    *,
    plan_path: str | os.PathLike[str] | None = None,
    calibration: dict[str, Any] | None = None,
    model_name: str | None = None,
    overwrite: bool = True,
    max_shard_size: int | None = None,
) -> Path:
    """Write out_dir/{hf/, trtllm/, plan.yaml, quantize_summary.json}; return out_dir.

    Built in a temporary directory beside `out_dir` and renamed into place, so a failed
    export never leaves a half-written engines/NAME/. The model is left as it was (each
    exporter works on a copy). `calibration` = {"path", "samples", "seq_len", "seed"}.
    """
    import modelopt

    plan = resolve_plan(plan)
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise InputError(f"output directory {target} exists")
    if target.exists() and not target.is_dir():
        raise InputError(f"output {target} exists and is not a directory")
    work = make_temp_beside(target, directory=True)
    work.chmod(0o755)
    try:
        notes = []
        # The calibrated quantizers, read before the export: the streaming export of an offloaded model
        # rebuilds fused MoE experts in place.
        layers = layer_summary(model, plan)
        _export_hf(model, tokenizer, work / "hf", max_shard_size)
        trtllm_note = _export_trtllm(model, work / "trtllm")
        if trtllm_note:
            notes.append(trtllm_note)
        inputs: dict[str, Any] = {}
        plan_sha = None
        if isinstance(plan.source, Plan):
            if plan_path is not None:
                shutil.copyfile(plan_path, work / "plan.yaml")
                inputs["plan"] = InputRef(path=str(plan_path), sha256=sha256_file(plan_path))
            else:
                save_artifact(plan.source, work / "plan.yaml")
                inputs["plan"] = InputRef(path="plan.yaml", sha256=sha256_file(work / "plan.yaml"))
            plan_sha = inputs["plan"].sha256
        else:
            text = json.dumps({k: list(v) for k, v in plan.source.items()}, indent=1) + "\n"
            atomic_write_text(work / "assignment.json", text)
            notes.append("applied a layer assignment, not a plan.yaml: assignment.json holds it")
        calibration = dict(calibration or {})
        if calibration.get("path"):
            inputs["calibration"] = calibration["path"]
        if calibration.get("device"):
            notes.append(
                f"calibrated on {calibration['device']} ({calibration.get('device_name')}) "
                f"in {calibration.get('dtype')}"
            )
        if calibration.get("sequential"):
            notes.append(
                "calibrated and exported one decoder block at a time (--sequential: ModelOpt's layerwise "
                "calibration and streaming export of a block-offloaded model)"
            )
        metadata = make_metadata(
            inputs=inputs, seed=calibration.get("seed"), notes=notes, versions={"nvidia-modelopt": modelopt.__version__}
        )
        summary = QuantizeSummary.create(
            metadata=metadata,
            model=model_name or _model_name(model),
            plan_sha256=plan_sha,
            calibration_sha256=metadata.inputs["calibration"].sha256 if "calibration" in metadata.inputs else None,
            calibration_samples=calibration.get("samples"),
            calibration_seq_len=calibration.get("seq_len"),
            calibration_stages=[
                {
                    "algorithm": algorithm if isinstance(algorithm, str) else algorithm.get("method"),
                    "layers": len(layers),
                }
                for algorithm, layers in calibration_stages(plan)
            ],
            kv_cache="not quantized (the plan does not quantize the KV cache)",
            hf_checkpoint="hf",
            trtllm_checkpoint=None if trtllm_note else "trtllm",
            layers=layers,
        )
        save_artifact(summary, work / "quantize_summary.json")
        # An existing output is swapped with the new tree in one atomic step, so the path never
        # holds nothing (two renames only where the OS lacks the swap; see replace_directory).
        replace_directory(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _model_name(model: Any) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
