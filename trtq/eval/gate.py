"""`trtq eval`: perplexity (and lm-eval tasks) of the reference model against the quantized one.

The quantized model for a plan is the other stages' own: `quantize_model` (ModelOpt
fake quantization, calibrated stage by stage) on a copy of the loaded model. NVFP4
layers, which ModelOpt quantizes only on CUDA, get their weights replaced by trtq's
reference NVFP4 quantize-dequantize on a CPU machine (weights only; said in the notes).

The quantized model for a checkpoint (`--checkpoint DIR`, what `trtq quantize` wrote) is
the artifact itself: trtq.eval.checkpoint rebuilds it from the exported tensors.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from trtq.artifacts import load_artifact, make_metadata
from trtq.artifacts.eval import EvalResult, TaskResult
from trtq.artifacts.io import sha256_file
from trtq.artifacts.plan import Plan
from trtq.errors import InputError, UnsupportedError
from trtq.eval.request import EvalRequest


def check_request(request: EvalRequest) -> Any:
    """Everything cheap, before a model loads; the opened checkpoint (its JSON only), if one was named."""
    if (request.plan is None) == (request.checkpoint is None):
        raise InputError("trtq eval needs exactly one of --plan FILE or --checkpoint DIR")
    if request.sequential and request.lm_eval:
        raise InputError("--lm-eval runs the whole model loaded: drop --sequential or --lm-eval")
    from trtq.model.device import resolve_placement

    resolve_placement(request.device, request.dtype)
    if request.checkpoint is None:
        return None
    from trtq.eval.checkpoint import open_checkpoint

    return open_checkpoint(request.checkpoint)


def split_plan(
    plan: Plan, cuda_available: bool
) -> tuple[dict[str, tuple[str, int | None]], dict[str, tuple[str, int | None]]]:
    """(layers ModelOpt quantizes here, layers -> (format, block size) for the reference substitute: the formats
    whose ModelOpt fake quantization needs CUDA, NVFP4)."""
    from trtq.registry import get_format

    modelopt_layers: dict[str, tuple[str, int | None]] = {}
    reference_layers: dict[str, tuple[str, int | None]] = {}
    for layer, (format_name, group_size) in plan.layer_formats().items():
        fmt = get_format(format_name)
        if not fmt.quantized:
            continue
        if fmt.modelopt_on_cpu or cuda_available:
            modelopt_layers[layer] = (fmt.name, group_size)
        else:
            reference_layers[layer] = (fmt.name, group_size)
    return modelopt_layers, reference_layers


def quantized_copy(model: Any, plan: Plan, calib_batches: Any) -> tuple[Any, list[str]]:
    """A fake-quantized copy of `model` as the plan says, and notes on how it was made."""
    import torch

    from trtq.quantize.apply import quantize_model
    from trtq.registry import get_format
    from trtq.sensitivity.quantizers import quantize_dequantize

    modelopt_layers, reference_layers = split_plan(plan, torch.cuda.is_available())
    quantized = copy.deepcopy(model)
    notes = []
    if modelopt_layers:
        quantize_model(quantized, modelopt_layers, calib_batches)
        notes.append(
            f"{len(modelopt_layers)} layers fake-quantized by ModelOpt "
            "(trtq.quantize.apply.quantize_model: weights and activations as each format says)"
        )
    if reference_layers:
        modules = dict(quantized.named_modules())
        with torch.no_grad():
            for layer, (format_name, block) in reference_layers.items():
                weight = modules[layer].weight
                weight.copy_(quantize_dequantize(weight, get_format(format_name), block))
        label = "/".join(sorted({name.upper() for name, _ in reference_layers.values()}))
        notes.append(
            f"{len(reference_layers)} {label} layers: weights replaced by trtq's reference {label} "
            f"quantize-dequantize (ModelOpt's {label} needs CUDA); activations NOT quantized"
        )
    return quantized, notes


def evaluate(
    request: EvalRequest, model: Any = None, tokenizer: Any = None, progress=None, work_beside: Path | None = None
) -> EvalResult:
    """Run the gate; the caller saves the artifact and turns `passed` into an exit code. `work_beside`: where
    `--plan --sequential` puts its offload folder (beside this path; default the system's temporary directory)."""
    from trtq.data import CALIBRATION_PATH, EVALUATION_PATH, encode_text, read_text_file, text_sha256, token_batches
    from trtq.eval.lm_eval import degradation, evaluate_tasks, parse_task_spec
    from trtq.eval.perplexity import evenly_spaced_windows, perplexity, reference_perplexity
    from trtq.model.zoo import load_pretrained, resolve_model

    say = progress or (lambda message: None)
    checkpoint = check_request(request)
    tasks = parse_task_spec(request.lm_eval) if request.lm_eval else {}
    resolved = resolve_model(request.model)
    if resolved.weights_format == "safetensors" and (Path(resolved.weights) / "hf_quant_config.json").is_file():
        raise InputError(
            f"model {request.model} is a quantized checkpoint: give the unquantized model it was "
            "made from, and the checkpoint to --checkpoint"
        )
    plan = None
    if checkpoint is None:
        plan = load_artifact(request.plan, Plan)
        if plan.model != resolved.name:
            raise InputError(f"plan {request.plan} was made for model {plan.model!r}, not {resolved.name!r}")
        from trtq.quantize.api import check_plan_against_model

        check_plan_against_model(plan, resolved, request.plan)
        if request.sequential:
            from trtq.model.device import resolve_placement

            _, substituted = split_plan(plan, resolve_placement(request.device, request.dtype).device != "cpu")
            if substituted:
                formats = "/".join(sorted({name.upper() for name, _ in substituted.values()}))
                raise UnsupportedError(
                    f"the plan has {len(substituted)} {formats} layers, which ModelOpt fake-quantizes on CUDA only "
                    "(on a CPU trtq substitutes its reference weights into the loaded model): drop --sequential, "
                    "or run on --device cuda"
                )
    else:
        from trtq.eval.checkpoint import check_model_matches

        check_model_matches(checkpoint, resolved.name, resolved.config)
    text_path = Path(request.text) if request.text else EVALUATION_PATH
    text = read_text_file(text_path)
    if checkpoint is None:
        calib_path = Path(request.calib) if request.calib else CALIBRATION_PATH
        calib_text = read_text_file(calib_path)
        if text_sha256(text) == text_sha256(calib_text):
            raise InputError(f"the evaluation text {text_path} is the calibration text: score on other text")
    elif checkpoint.calibration_sha256 == text_sha256(text):
        raise InputError(
            f"the evaluation text {text_path} is the text {checkpoint.root} was calibrated on: score on other text"
        )

    if request.sequential:
        if model is not None:
            raise InputError("trtq eval --sequential reads the weights itself: give no loaded model")
        if checkpoint is not None:
            return _sequential_checkpoint_eval(request, resolved, checkpoint, text_path, text, tokenizer, say)
        return _sequential_plan_eval(request, resolved, plan, text_path, text, calib_path, calib_text, say, work_beside)
    if model is None or tokenizer is None:
        started = time.perf_counter()
        model, tokenizer = load_pretrained(resolved, dtype=request.dtype, device=request.device)
        say(f"loaded {resolved.name} in {time.perf_counter() - started:.0f} s")
    if checkpoint is not None:
        # Before the reference is scored: a broken checkpoint fails fast.
        from trtq.eval.checkpoint import load_checkpoint_model

        started = time.perf_counter()
        loaded = load_checkpoint_model(checkpoint, model, dtype=next(model.parameters()).dtype)
        say(f"rebuilt {checkpoint.root} from its exported tensors in {time.perf_counter() - started:.0f} s")
    windows = evenly_spaced_windows(encode_text(tokenizer, text), request.seq_len, request.max_windows)
    started = time.perf_counter()
    reference = reference_perplexity(model, windows)
    say(
        f"reference perplexity {reference.ppl:.3f} over {reference.windows} x {request.seq_len} tokens "
        f"({time.perf_counter() - started:.0f} s)"
    )

    if checkpoint is None:
        started = time.perf_counter()
        calib_batches = token_batches(tokenizer, calib_text, request.calib_samples, request.calib_seq_len, request.seed)
        quantized, notes = quantized_copy(model, plan, calib_batches)
        counts = _layer_counts(plan)
        say(f"quantized as {request.plan} in {time.perf_counter() - started:.0f} s")
    else:
        quantized, notes, counts = loaded.model, loaded.notes, loaded.layer_formats
        del loaded
    started = time.perf_counter()
    result = perplexity(quantized, windows)
    say(f"quantized perplexity {result.ppl:.3f} ({time.perf_counter() - started:.0f} s)")

    task_results = []
    if tasks:
        names = list(tasks)
        say(f"lm-eval {', '.join(names)} on the reference model")
        before = evaluate_tasks(model, tokenizer, names, limit=request.lm_eval_limit)
        say(f"lm-eval {', '.join(names)} on the quantized model")
        after = evaluate_tasks(quantized, tokenizer, names, limit=request.lm_eval_limit)
        for name in names:
            metric, ref_value, samples = before[name]
            q_value = after[name][1]
            drop = degradation(ref_value, q_value)
            limit = tasks[name] / 100.0
            task_results.append(
                TaskResult(
                    task=name,
                    metric=metric,
                    reference=ref_value,
                    quantized=q_value,
                    degradation=drop,
                    threshold=limit,
                    passed=drop <= limit,
                    samples=samples,
                )
            )
    del quantized

    parameter = next(model.parameters())
    notes.append(_reference_note(f"{parameter.dtype} on {parameter.device}", reference.windows))
    if tasks:
        notes.append("lm-eval degradation = relative drop of the task metric, (reference - quantized) / reference")
    if checkpoint is None:
        inputs: dict[str, Any] = {"plan": request.plan, "text": text_path, "calib": calib_path}
    else:
        inputs = {"text": text_path}
    return _result(
        request, resolved, checkpoint, inputs, text_path, text, reference, result, counts, notes, task_results
    )


def _layer_counts(plan: Plan) -> dict[str, int]:
    """trtq format -> the plan's layers in it."""
    from trtq.plan.summary import format_counts

    return dict(format_counts(plan))


def _reference_note(placed: str, windows: int) -> str:
    return (
        f"reference: the unquantized model ({placed}); windows: {windows} non-overlapping, evenly spaced over the text"
    )


def _placed(placement) -> str:
    return f"{placement.dtype} on {placement.device}, {placement.device_name}"


def _sequential_checkpoint_eval(request, resolved, checkpoint, text_path, text, tokenizer, say) -> EvalResult:
    """The checkpoint gate with one decoder block in memory at a time (trtq.eval.sequential)."""
    from trtq.data import encode_text
    from trtq.eval.perplexity import evenly_spaced_windows
    from trtq.eval.sequential import sequential_checkpoint_scores
    from trtq.model.device import resolve_placement
    from trtq.model.zoo import weights_directory

    placement = resolve_placement(request.device, request.dtype)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(weights_directory(resolved)))
    windows = evenly_spaced_windows(encode_text(tokenizer, text), request.seq_len, request.max_windows)
    scores = sequential_checkpoint_scores(resolved, checkpoint, windows, placement.device, placement.dtype, say)
    notes = scores.notes + [_reference_note(_placed(placement), scores.reference.windows)]
    return _result(
        request,
        resolved,
        checkpoint,
        {"text": text_path},
        text_path,
        text,
        scores.reference,
        scores.quantized,
        scores.layer_formats,
        notes,
        [],
    )


def _sequential_plan_eval(
    request, resolved, plan, text_path, text, calib_path, calib_text, say, work_beside
) -> EvalResult:
    """The plan gate with the decoder blocks offloaded (to disk on a CPU, to host RAM with a GPU): the reference
    scored through accelerate's offload hooks, then the same model quantized in place by ModelOpt's layerwise
    calibration (one block at a time, as `trtq quantize --sequential` does) and scored again."""
    from trtq.data import encode_text, token_batches
    from trtq.eval.perplexity import evenly_spaced_windows, perplexity
    from trtq.model.device import resolve_placement
    from trtq.model.zoo import load_pretrained
    from trtq.quantize.apply import quantize_model
    from trtq.quantize.offload import offload_directory

    placement = resolve_placement(request.device, request.dtype)
    modelopt_layers, _ = split_plan(plan, placement.device != "cpu")
    with offload_directory(work_beside) as offload:
        started = time.perf_counter()
        model, tokenizer = load_pretrained(
            resolved, dtype=placement.dtype, device=placement.device, offload_folder=offload
        )
        say(f"loaded {resolved.name} with its decoder blocks offloaded in {time.perf_counter() - started:.0f} s")
        windows = evenly_spaced_windows(encode_text(tokenizer, text), request.seq_len, request.max_windows)
        started = time.perf_counter()
        reference = perplexity(model, windows)
        say(
            f"reference perplexity {reference.ppl:.3f} over {reference.windows} x {request.seq_len} tokens, "
            f"one decoder block at a time ({time.perf_counter() - started:.0f} s)"
        )
        started = time.perf_counter()
        if modelopt_layers:
            batches = token_batches(tokenizer, calib_text, request.calib_samples, request.calib_seq_len, request.seed)
            quantize_model(model, modelopt_layers, batches, layerwise=True)
        say(f"quantized as {request.plan} one decoder block at a time in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        result = perplexity(model, windows)
        say(f"quantized perplexity {result.ppl:.3f} ({time.perf_counter() - started:.0f} s)")
    counts = _layer_counts(plan)
    notes = [
        f"{len(modelopt_layers)} layers fake-quantized by ModelOpt in place, calibrated one decoder block at a time "
        "(layerwise calibration on each block's inputs from the unquantized model)",
        f"block-sequential: the decoder blocks offloaded ({'host RAM' if placement.device != 'cpu' else 'disk'}), "
        "one on the device at a time, for the reference and the quantized passes",
        _reference_note(_placed(placement), reference.windows),
    ]
    return _result(
        request,
        resolved,
        None,
        {"plan": request.plan, "text": text_path, "calib": calib_path},
        text_path,
        text,
        reference,
        result,
        counts,
        notes,
        [],
    )


def _result(
    request, resolved, checkpoint, inputs, text_path, text, reference, result, counts, notes, task_results
) -> EvalResult:
    """The eval artifact: the two perplexities, the gate's verdict on them and the tasks, and what went in."""
    import torch

    from trtq.data import text_sha256

    increase = result.ppl / reference.ppl - 1.0
    threshold = request.max_ppl_increase / 100.0
    if checkpoint is None:
        plan_path = request.plan
    else:
        # The checkpoint's files by their path under it, e.g. hf/model.safetensors, hf/hf_quant_config.json.
        inputs = {**inputs, **checkpoint.input_files()}
        plan_path = checkpoint.plan_path
    return EvalResult.create(
        metadata=make_metadata(
            inputs=inputs,
            seed=request.seed if checkpoint is None else None,
            notes=notes,
            versions={"torch_threads": str(torch.get_num_threads())},
        ),
        model=resolved.name,
        source="plan" if checkpoint is None else "checkpoint",
        plan=None if plan_path is None else str(plan_path),
        plan_sha256=None if plan_path is None else sha256_file(plan_path),
        checkpoint=None if checkpoint is None else str(checkpoint.root),
        text=str(text_path),
        text_sha256=text_sha256(text),
        seq_len=request.seq_len,
        windows=reference.windows,
        tokens=reference.tokens,
        ppl_bf16=reference.ppl,
        ppl_quant=result.ppl,
        relative_increase=increase,
        threshold=threshold,
        passed=increase <= threshold and all(t.passed for t in task_results),
        lm_eval=task_results,
        layer_formats=counts,
    )


def verdict(result: EvalResult) -> str:
    """One line: what passed or failed, and by how much."""
    parts = [
        f"perplexity {result.ppl_bf16:.3f} -> {result.ppl_quant:.3f} "
        f"({100 * result.relative_increase:+.2f}%, limit {100 * result.threshold:g}%)"
    ]
    for task in result.lm_eval:
        parts.append(
            f"{task.task} {task.metric} {task.reference:.4f} -> {task.quantized:.4f} "
            f"({-100 * task.degradation:+.2f}%, limit -{100 * task.threshold:g}%)"
        )
    if result.passed:
        return "PASS: " + "; ".join(parts)
    # Name what failed first: with a task in the gate, the perplexity part may have passed.
    failed = ([] if result.relative_increase <= result.threshold else ["perplexity"]) + [
        task.task for task in result.lm_eval if not task.passed
    ]
    return f"FAIL ({', '.join(failed)}): " + "; ".join(parts)
