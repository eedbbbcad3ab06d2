"""Library entry point of the quantize stage: plan file in, engines/NAME/ out."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from trtq.artifacts import load_artifact
from trtq.artifacts.plan import Plan
from trtq.errors import InputError
from trtq.quantize.request import QuantizeRequest


def check_plan_against_model(plan: Plan, resolved, plan_path) -> None:
    """Before any calibration: the plan covers every quantizable layer, fused groups on one format."""
    from trtq.artifacts.validate import check_plan_covers_graph
    from trtq.model.layers import build_layer_graph

    include_lm_head = any(m.rsplit(".", 1)[-1] == "lm_head" for g in plan.groups for m in g.members)
    graph = build_layer_graph(resolved, include_lm_head=include_lm_head)
    check_plan_covers_graph(plan, graph, str(plan_path))


def quantize_from_plan(request: QuantizeRequest, output: str | Path) -> Path:
    """Everything cheap is checked before the model loads: the plan, its formats on this machine, the text."""
    from trtq.console import fmt_bytes, stderr_console
    from trtq.data import CALIBRATION_PATH, read_text_file, token_batches
    from trtq.model.device import resolve_placement
    from trtq.model.zoo import resolve_model
    from trtq.quantize.apply import check_runnable_here
    from trtq.quantize.quant_cfg import check_expert_formats, moe_expert_layers, resolve_plan

    model_spec, plan_path, runtime = request.model, request.plan, request.runtime
    calib_samples, calib_seq_len, seed = request.calib_samples, request.calib_seq_len, request.seed
    placement = resolve_placement(request.device, request.dtype)
    plan = load_artifact(plan_path, Plan)
    resolved_plan = resolve_plan(plan)  # checked once, passed down
    check_runnable_here(resolved_plan, cuda_available=placement.device != "cpu")
    check_expert_formats(resolved_plan, moe_expert_layers(resolved_plan))
    require_plan_runtime(plan, plan_path, runtime)
    resolved = resolve_model(model_spec)
    if plan.model != resolved.name:
        raise InputError(f"plan {plan_path} was made for model {plan.model!r}, not {resolved.name!r}")
    text_path = Path(request.calib) if request.calib else CALIBRATION_PATH
    text = read_text_file(text_path)
    check_plan_against_model(plan, resolved, plan_path)

    from trtq.model.zoo import load_pretrained
    from trtq.quantize.apply import export_checkpoint, quantize_model
    from trtq.quantize.offload import offload_directory

    console = stderr_console()
    started = time.perf_counter()
    # --sequential: accelerate offloads the decoder blocks (to disk beside the output on a CPU) and
    # ModelOpt calibrates and exports them one at a time.
    with offload_directory(output) if request.sequential else contextlib.nullcontext() as offload:
        model, tokenizer = load_pretrained(
            resolved, dtype=placement.dtype, device=placement.device, offload_folder=offload
        )
        batches = token_batches(tokenizer, text, calib_samples, calib_seq_len, seed)
        console.print(
            f"loaded {resolved.name} in {time.perf_counter() - started:.0f} s; calibrating "
            f"{len(resolved_plan.layers)} layers on {calib_samples} x {calib_seq_len} tokens of {text_path.name}"
            + (" one decoder block at a time" if offload else "")
        )
        started = time.perf_counter()
        quantize_model(model, resolved_plan, batches, layerwise=request.sequential)
        console.print(f"quantized in {time.perf_counter() - started:.0f} s; exporting")
        out = export_checkpoint(
            model,
            tokenizer,
            resolved_plan,
            output,
            plan_path=plan_path,
            model_name=resolved.name,
            max_shard_size=request.max_shard_size,
            calibration={
                "path": str(text_path),
                "samples": calib_samples,
                "seq_len": calib_seq_len,
                "seed": seed,
                "sequential": request.sequential,
                **placement.as_settings(),
            },
        )
    counts: dict[str, int] = {}
    for _, fmt, _ in resolved_plan.layers:
        counts[fmt.name] = counts.get(fmt.name, 0) + 1
    size = sum(f.stat().st_size for f in (out / "hf").glob("*.safetensors"))
    console.print(
        f"wrote {out}: "
        + ", ".join(f"{n} {name}" for name, n in counts.items())
        + f" layers; hf/ {fmt_bytes(size)}"
        + ("; trtllm/" if (out / "trtllm").is_dir() else "; no trtllm/ (see summary)")
    )
    return out


def require_plan_runtime(plan: Plan, plan_path, requested: str | None):
    """Refuse a plan made for another runtime, and any format the runtime does not run on the plan's GPU."""
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import require_format, resolve_runtime

    runtime = resolve_runtime(requested, plan.runtime, f"plan {plan_path}")
    gpu = get_gpu(plan.gpu)
    for fmt in sorted({g.format for g in plan.groups}):
        require_format(gpu, fmt, runtime)
    return runtime
