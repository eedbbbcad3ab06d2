"""Library entry point of the sensitivity stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import Sensitivity
from trtq.errors import InputError
from trtq.model.device import Placement, placement_of, resolve_placement
from trtq.registry import Format, parse_formats
from trtq.sensitivity.request import SensitivityRequest

if TYPE_CHECKING:
    from trtq.model.zoo import ResolvedModel


def _no_loaded_model_if_sequential(sequential: bool, model) -> None:
    if sequential and model is not None:
        raise InputError("block-sequential sensitivity reads the weights itself: give no loaded model")


def weight_sensitivity(
    model_spec: str,
    formats: str | None = None,
    include_lm_head: bool = False,
    model=None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    sequential: bool = False,
) -> Sensitivity:
    """Weight-perturbation sensitivity of every quantizable layer for every format that fits it.

    `sequential`: each weight read from the safetensors in turn, no model built (memory: one tensor)."""
    import torch

    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.sensitivity.weight import weight_rows

    _no_loaded_model_if_sequential(sequential, model)
    placement = resolve_placement(device, dtype) if model is None else placement_of(model)
    resolved = resolve_model(model_spec)
    graph = build_layer_graph(resolved, include_lm_head=include_lm_head)
    fmts = parse_formats(formats)
    if sequential:
        from trtq.sensitivity.sequential import streamed_weight_rows

        rows = streamed_weight_rows(resolved, graph, fmts, device=placement.device, dtype=placement.dtype)
    else:
        if model is None:
            model, _ = load_pretrained(resolved, dtype=placement.dtype, device=placement.device)
        with torch.no_grad():
            rows = weight_rows(model, graph, fmts)
    inputs = {"weights": str(resolved.weights)} if resolved.weights and resolved.weights.is_file() else {}
    return Sensitivity.create(
        metadata=make_metadata(
            inputs=inputs,
            notes=[
                "omega = ||Q_f(W) - W||_F^2 with trtq's reference quantizers (round-to-nearest; "
                "AWQ/SmoothQuant scaling not applied)"
            ],
        ),
        model=resolved.name,
        method="weight",
        formats=[f.name for f in fmts],
        settings={"include_lm_head": include_lm_head, "sequential": sequential, **placement.as_settings()},
        rows=rows,
    )


@dataclass
class _Calibrated:
    """What the data-driven methods share: the layer graph, formats, loaded model and windows."""

    resolved: ResolvedModel
    graph: LayerGraph
    formats: list[Format]
    model: Any  # the loaded torch model
    batches: Any  # torch.Tensor [samples, seq_len] of token ids
    inputs: dict[str, str]
    placement: Placement


def _calibrated(
    model_spec: str,
    samples: int,
    seq_len: int,
    seed: int,
    model,
    tokenizer,
    formats: str | None,
    include_lm_head: bool,
    calib: str | None,
    device: str = "cpu",
    dtype: str = "float32",
    before_load=None,
    sequential: bool = False,
) -> _Calibrated:
    """`samples` windows of `seq_len` tokens drawn (seeded) from the shipped calibration text or `calib`.

    `sequential`: no model is loaded (a block-sequential pass reads its weights block by block): only the
    tokenizer, and the windows stay on the CPU."""
    from trtq.data import calibration_text, read_text_file, token_batches
    from trtq.data.texts import CALIBRATION_PATH
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import load_pretrained, resolve_model, weights_directory

    _no_loaded_model_if_sequential(sequential, model)
    placement = resolve_placement(device, dtype) if model is None else placement_of(model)
    resolved = resolve_model(model_spec)
    graph = build_layer_graph(resolved, include_lm_head=include_lm_head)
    fmts = parse_formats(formats)
    text = read_text_file(calib) if calib else calibration_text()
    if before_load is not None:  # the method's own refusals, before the model costs its load
        before_load(graph, fmts)
    if sequential and tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(weights_directory(resolved)))
    elif not sequential and (model is None or tokenizer is None):
        loaded_model, loaded_tokenizer = load_pretrained(resolved, dtype=placement.dtype, device=placement.device)
        model = model if model is not None else loaded_model
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    inputs = {"calib": str(calib if calib else CALIBRATION_PATH)}
    if resolved.weights and resolved.weights.is_file():
        inputs["weights"] = str(resolved.weights)
    batches = token_batches(tokenizer, text, samples, seq_len, seed)
    if model is not None:
        batches = batches.to(next(model.parameters()).device)
    return _Calibrated(resolved, graph, fmts, model, batches, inputs, placement)


def _block_sequential(
    c: _Calibrated,
    rows_of,
    *,
    samples: int,
    seq_len: int,
    seed: int,
    checkpoint_dir: str | Path | None,
    progress,
) -> tuple[list, str]:
    """A block-sequential pass (`rows_of`: trtq.sensitivity.sequential's sequential_output_rows or
    sequential_fisher_rows) over `c`'s windows, resumable from `checkpoint_dir`; (rows, a note)."""
    if checkpoint_dir is None:
        raise InputError("block-sequential sensitivity needs a checkpoint directory")
    settings = {
        "samples": samples,
        "seq_len": seq_len,
        "seed": seed,
        "formats": [f.name for f in c.formats],
        "device": c.placement.device,
        "dtype": c.placement.dtype,
    }
    run = rows_of(
        c.resolved,
        c.graph,
        c.formats,
        c.batches,
        checkpoint_dir=Path(checkpoint_dir),
        settings=settings,
        device=c.placement.device,
        dtype=c.placement.dtype,
        progress=progress,
    )
    note = f"block-sequential: one of {run.blocks} decoder blocks in memory at a time" + (
        f", resumed at step {run.resumed_from}" if run.resumed_from else ""
    )
    return run.rows, note


def hessian_sensitivity(
    model_spec: str,
    samples: int = 8,
    seq_len: int = 512,
    seed: int = 0,
    model=None,
    tokenizer=None,
    *,
    formats: str | None = None,
    include_lm_head: bool = False,
    calib: str | None = None,
    tolerance: float | None = None,
    max_iterations: int | None = None,
    progress=None,
    device: str = "cpu",
    dtype: str = "float32",
    sequential: bool = False,
    checkpoint_dir: str | None = None,
) -> Sensitivity:
    """HAWQ-V2/V3 sensitivity: mean Hessian traces of each layer's weight and input x their quantization errors.

    `samples` windows of `seq_len` tokens are drawn (seeded) from the shipped
    calibration text, or from the UTF-8 file `calib`. `sequential`: the same traces and rows with one
    decoder block in memory at a time (trtq.sensitivity.sequential_hessian), resumable from `checkpoint_dir`.
    """
    import torch

    from trtq.sensitivity.hessian import (
        DEFAULT_MAX_ITERATIONS,
        DEFAULT_TOLERANCE,
        hessian_rows,
        model_traces,
        trace_estimates,
    )

    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    max_iterations = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
    if not 0 < tolerance < 1:
        raise InputError(f"tolerance must be between 0 and 1, got {tolerance}")
    if max_iterations < 2:
        raise InputError(f"max iterations must be at least 2, got {max_iterations}")
    c = _calibrated(
        model_spec,
        samples,
        seq_len,
        seed,
        model,
        tokenizer,
        formats,
        include_lm_head,
        calib,
        device=device,
        dtype=dtype,
        sequential=sequential,
    )
    resolved, graph, fmts, model, inputs = c.resolved, c.graph, c.formats, c.model, c.inputs
    options = dict(tolerance=tolerance, max_iterations=max_iterations, seed=seed, progress=progress)
    resumed = 0
    if sequential:
        from trtq.sensitivity.sequential_hessian import sequential_hessian

        traces, rows, resumed = sequential_hessian(
            resolved,
            graph,
            fmts,
            c.batches,
            device=c.placement.device,
            dtype=c.placement.dtype,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
            settings={
                "samples": samples,
                "seq_len": seq_len,
                "formats": [f.name for f in fmts],
                **c.placement.as_settings(),
            },
            **options,
        )
    else:
        traces = model_traces(model, graph, c.batches, **options)
        rows = hessian_rows(model, graph, fmts, traces, c.batches)
    tensors = [*traces.weights.values(), *traces.inputs.values()]
    converged = sum(stats.converged for stats in tensors)
    return Sensitivity.create(
        metadata=make_metadata(
            inputs=inputs,
            seed=seed,
            notes=[
                "omega = sum over input channels j of max(t_W[j], floor) x ||dW[:, j]||^2 + max(t_X[j], floor) x "
                "mean ||dX[:, j]||^2 (HAWQ-V3's weight term and HAWQ-V2's activation term; t[j] = channel j's share "
                "of tr(H) per element, from v * Hv; floor = 1e-3 x the smallest positive layer mean trace of the "
                "same kind); rows' hessian_trace / input_hessian_trace are the layer means tr(H) / numel",
                "dW = Q_w(W') / s - W, dX = Q_a(X') * s - X: the kernel's operands in the layer's space with trtq's "
                "reference quantizers (round-to-nearest; s = SmoothQuant scales, alpha 1, for int8_sq, else 1; "
                "AWQ scaling not applied); dX averaged over the calibration batches",
                "tr(H) by Hutchinson: Rademacher probes shared by every weight and layer input, Hessian-vector "
                "products by double back-propagation of the next-token cross-entropy; iteration k uses batch k mod samples"
                + (
                    "; block-sequential: the same products by Pearlmutter's R-operator, one decoder block in memory "
                    "at a time (jvp of each block's vector-Jacobian product)"
                    + (f", resumed after probe {resumed}" if resumed else "")
                    if sequential
                    else ""
                ),
                "fused MoE experts: channels are (expert, input channel) pairs, each expert's error with its own "
                "SmoothQuant scales and its input curvature per token routed to it; one row per fused layer (summed)",
                f"{converged}/{len(tensors)} traces converged; {traces.iterations} probes in {traces.seconds:.0f} s "
                f"on {torch.get_num_threads()} threads",
            ],
        ),
        model=resolved.name,
        method="hessian",
        formats=[f.name for f in fmts],
        settings={
            **c.placement.as_settings(),
            "include_lm_head": include_lm_head,
            "samples": samples,
            "seq_len": seq_len,
            "seed": seed,
            "tolerance": tolerance,
            "max_iterations": max_iterations,
            "sequential": sequential,
            "iterations": traces.iterations,
            "seconds": round(traces.seconds, 3),
        },
        rows=rows,
        traces=trace_estimates(traces),
    )


def fisher_sensitivity(
    model_spec: str,
    samples: int = 8,
    seq_len: int = 512,
    seed: int = 0,
    model=None,
    tokenizer=None,
    *,
    formats: str | None = None,
    include_lm_head: bool = False,
    calib: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    sequential: bool = False,
    checkpoint_dir: str | None = None,
    progress=None,
) -> Sensitivity:
    """Omega = 1/2 sum (dL/dY)^2 (Q_a(X') Q_w(W')^T - X W^T)^2: weights *and* activations, per layer.

    `sequential`: the same scores with one decoder block in memory at a time (backpropagation
    checkpointed at the block boundaries, trtq.sensitivity.sequential), resumable from `checkpoint_dir`."""
    import time

    import torch

    c = _calibrated(
        model_spec,
        samples,
        seq_len,
        seed,
        model,
        tokenizer,
        formats,
        include_lm_head,
        calib,
        device=device,
        dtype=dtype,
        sequential=sequential,
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    notes = [
        "omega = 1/2 sum over calibration tokens of (dL/dY)^2 x dY^2, dY = Q_a(X') Q_w(W')^T - X W^T "
        "with trtq's reference quantizers (SmoothQuant alpha 1 for int8_sq); weight_error = ||Q_w(W') / s - W||^2 "
        "(s = 1 except for SmoothQuant)",
        "fused MoE experts: per expert on the tokens routed to it (dL/dY of that expert's GEMM output), "
        "summed over the layer's experts",
    ]
    if sequential:
        from trtq.sensitivity.sequential import sequential_fisher_rows

        rows, note = _block_sequential(
            c,
            sequential_fisher_rows,
            samples=samples,
            seq_len=seq_len,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
        )
        notes.append(note + " (the whole model's gradients, activations checkpointed per block)")
    else:
        from trtq.sensitivity.fisher import fisher_scores

        rows = fisher_scores(c.model, c.graph, c.formats, c.batches).rows()
    seconds = time.perf_counter() - start
    return Sensitivity.create(
        metadata=make_metadata(inputs=c.inputs, seed=seed, notes=notes),
        model=c.resolved.name,
        method="fisher",
        formats=[f.name for f in c.formats],
        settings={
            **c.placement.as_settings(),
            "include_lm_head": include_lm_head,
            "samples": samples,
            "seq_len": seq_len,
            "seed": seed,
            "sequential": sequential,
            "seconds": round(seconds, 3),
        },
        rows=rows,
    )


def output_sensitivity(
    model_spec: str,
    samples: int = 8,
    seq_len: int = 512,
    seed: int = 0,
    model=None,
    tokenizer=None,
    *,
    formats: str | None = None,
    include_lm_head: bool = False,
    calib: str | None = None,
    sequential: bool = False,
    checkpoint_dir: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress=None,
) -> Sensitivity:
    """Omega = 1/2 sum ||Q_a(X') Q_w(W')^T - X W^T||^2 per layer (GPTQ's layer-wise Hessian objective).

    `sequential`: one decoder block in memory at a time, read from the safetensors, resumable from
    `checkpoint_dir` (trtq.sensitivity.sequential); otherwise the whole model is loaded.
    """
    import time

    import torch

    from trtq.sensitivity.output import output_rows

    started = time.perf_counter()
    notes = [
        "omega = 1/2 sum over calibration tokens of ||Q_a(X') Q_w(W')^T - X W^T||^2 (GPTQ's layer-wise "
        "Hessian objective, H = X^T X, with the activations quantized too; trtq's reference quantizers, "
        "SmoothQuant alpha 1 for int8_sq); MoE experts per expert on their routed tokens, summed; "
        "weight_error = ||Q_w(W') / s - W||^2"
    ]
    c = _calibrated(
        model_spec,
        samples,
        seq_len,
        seed,
        model,
        tokenizer,
        formats,
        include_lm_head,
        calib,
        device=device,
        dtype=dtype,
        sequential=sequential,
    )
    resolved, graph, fmts, placement, inputs = c.resolved, c.graph, c.formats, c.placement, c.inputs
    if sequential:
        from trtq.sensitivity.sequential import sequential_output_rows

        rows, note = _block_sequential(
            c,
            sequential_output_rows,
            samples=samples,
            seq_len=seq_len,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
        )
        notes.append(note)
    else:
        with torch.no_grad():
            rows = output_rows(c.model, graph, fmts, c.batches)
    table = Sensitivity.create(
        metadata=make_metadata(inputs=inputs, seed=seed, notes=notes),
        model=resolved.name,
        method="output",
        formats=[f.name for f in fmts],
        settings={
            **placement.as_settings(),
            "include_lm_head": include_lm_head,
            "samples": samples,
            "seq_len": seq_len,
            "seed": seed,
            "sequential": sequential,
            "seconds": round(time.perf_counter() - started, 3),
        },
        rows=rows,
    )
    return table


def autoquantize_sensitivity(
    model_spec: str,
    samples: int = 8,
    seq_len: int = 512,
    seed: int = 0,
    model=None,
    tokenizer=None,
    *,
    formats: str | None = None,
    include_lm_head: bool = False,
    calib: str | None = None,
    score: str = "gradient",
    batch_size: int = 4,
    checkpoint: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> Sensitivity:
    """ModelOpt AutoQuantize's own scores (searcher's candidate_stats) for every layer x format.

    The same calibration windows as the Hessian and Fisher methods calibrate every candidate and
    score it, `batch_size` windows per step. lm_head is disabled unless `include_lm_head`, as
    NVIDIA's hf_ptq.py does.
    """
    import modelopt
    import torch

    from trtq.sensitivity.autoquantize import autoquantize_table_rows, check_formats, run_autoquantize
    from trtq.sensitivity.weight import weight_rows

    c = _calibrated(
        model_spec,
        samples,
        seq_len,
        seed,
        model,
        tokenizer,
        formats,
        include_lm_head,
        calib,
        device=device,
        dtype=dtype,
        before_load=check_formats,
    )
    torch.manual_seed(seed)
    run = run_autoquantize(
        c.model, c.graph, c.formats, c.batches, score=score, batch_size=batch_size, checkpoint=checkpoint
    )
    with torch.no_grad():
        weight_errors = {(r.layer, r.format): r.weight_error for r in weight_rows(c.model, c.graph, c.formats)}
    rows, groups = autoquantize_table_rows(c.graph, c.formats, run, weight_errors)
    scoring = "restored from the checkpoint" if run.scoring_seconds is None else f"{run.scoring_seconds:.0f} s"
    return Sensitivity.create(
        metadata=make_metadata(
            inputs=c.inputs,
            seed=seed,
            notes=[
                f"omega = ModelOpt {modelopt.__version__} AutoQuantize ({score}) score of the layer's group, read from its "
                "searcher's candidate_stats (after its monotone pass over formats ordered by compression), split over the "
                "group's members in proportion to their weight size; raw_score = the layer's own score before both",
                "weight_error = ||Q_f(W) - W||^2 with trtq's reference quantizers (not AutoQuantize's)",
                f"auto_quantize {run.seconds:.0f} s in all (calibrating every candidate, then scoring); scoring {scoring}",
            ],
        ),
        model=c.resolved.name,
        method="autoquantize",
        formats=[f.name for f in c.formats],
        settings={
            **c.placement.as_settings(),
            "include_lm_head": include_lm_head,
            "samples": samples,
            "seq_len": seq_len,
            "seed": seed,
            "score": score,
            "batch_size": batch_size,
            "seconds": round(run.seconds, 3),
            "scoring_seconds": None if run.scoring_seconds is None else round(run.scoring_seconds, 3),
            "autoquantize_groups": groups,
        },
        rows=rows,
    )


def checkpoint_dir_for(output: str):
    """Where a block-sequential run keeps its partial results: next to its output, removed once it is written."""
    from pathlib import Path

    path = Path(output)
    return path.with_name(f".{path.name}.partial")


def compute_sensitivity(
    request: SensitivityRequest, progress=None, model=None, tokenizer=None, checkpoint_dir=None
) -> Sensitivity:
    """The table `request.method` asks for (`model`/`tokenizer`: already loaded, else loaded here), with the
    KV-cache formats' Omega when `request.kv_formats` names them.

    `checkpoint_dir`: where `--sequential` keeps its per-block results (`checkpoint_dir_for(output)`).
    """
    r = request
    placement = dict(device=r.device, dtype=r.dtype)
    if r.method == "weight":
        table = weight_sensitivity(
            r.model, r.formats, r.include_lm_head, model=model, sequential=r.sequential, **placement
        )
    else:
        common = dict(
            samples=r.samples,
            seq_len=r.seq_len,
            seed=r.seed,
            model=model,
            tokenizer=tokenizer,
            formats=r.formats,
            include_lm_head=r.include_lm_head,
            calib=r.calib,
            **placement,
        )
        if r.method == "autoquantize":
            table = autoquantize_sensitivity(r.model, **common, score=r.score, batch_size=r.score_batch)
        elif r.method == "fisher":
            table = fisher_sensitivity(
                r.model, **common, sequential=r.sequential, checkpoint_dir=checkpoint_dir, progress=progress
            )
        elif r.method == "output":
            table = output_sensitivity(
                r.model, **common, sequential=r.sequential, checkpoint_dir=checkpoint_dir, progress=progress
            )
        else:
            table = hessian_sensitivity(
                r.model,
                **common,
                tolerance=r.tolerance,
                max_iterations=r.max_iterations,
                progress=progress,
                sequential=r.sequential,
                checkpoint_dir=checkpoint_dir,
            )
    if r.kv_formats:
        from trtq.sensitivity.kv_cache import METHOD, kv_cache_sensitivity, parse_kv_formats

        table.kv_cache = kv_cache_sensitivity(
            r.model, parse_kv_formats(r.kv_formats), r.samples, r.seq_len, r.seed, calib=r.calib
        )
        table.kv_cache_method = METHOD
        table.metadata.notes.append(
            "kv_cache: Omega of each KV-cache format = mean per-token KL(p_bf16 || p_kv) over the calibration "
            "windows with ModelOpt's KV preset (FP8_KV_CFG / NVFP4_KV_CFG, max calibration) on the bf16 model"
        )
    return table
