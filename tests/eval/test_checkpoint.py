"""`trtq eval --checkpoint`: the exported checkpoint rebuilt as a float model, proved against ModelOpt.

One mixed plan (fp8, int8_sq, int4_awq with groups 64 and 128, w4a8_awq, bf16; the plan of
tests/quantize/test_export.py) is quantized once through `trtq quantize` (4 x 128 calibration
tokens, seed 3); the in-memory ModelOpt model it was exported from is re-made with the same
calibration and compared with the checkpoint rebuilt by trtq.eval.checkpoint:

  * ModelOpt's exporter runs on a bf16 copy and first rewrites the model: q/k/v and gate/up
    groups in AWQ / SmoothQuant formats get one averaged pre_quant_scale (weights re-scaled and
    re-quantized; for AWQ folded into the RMSNorm before them) and one input amax. The model
    after that step ("as exported") is the one the checkpoint's tensors were packed from:
    ModelOpt's own per-layer export of it reproduces every exported tensor bit for bit.
  * Layer by layer, on real hidden states, the rebuilt layer's output differs from the
    as-exported fake-quantized layer's only by the weight codes ModelOpt's packing arithmetic
    rounds differently from its fake quantizer, plus the bf16 GEMM's own rounding.
  * Perplexity through the CLI: the checkpoint scores what the as-exported model scores; the
    gap to `--plan` (fake quantization in float32 before export) is measured and printed.

Run with `-s` to see the measured tables. About two minutes on 2 idle cores.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.eval.conftest import FAST_EVAL
from tests.helpers.checkpoints import copy_checkpoint, edit_json, rewrite_weights
from tests.helpers.plans import MIXED_FORMATS, plan_from_graph
from trtq.artifacts import load_artifact
from trtq.artifacts.eval import EvalResult
from trtq.artifacts.io import sha256_file
from trtq.cli import main
from trtq.errors import ArtifactError, UnsupportedError
from trtq.eval import checkpoint as ckpt
from trtq.sensitivity.quantizers import fp8_e4m3

ALGO = {"fp8": "FP8", "int8_sq": "W8A8_SQ_PER_CHANNEL", "int4_awq": "W4A16_AWQ", "w4a8_awq": "W4A8_AWQ"}
BF16_ULP = 2.0 ** -8     # bf16 keeps 8 significant bits: one rounding moves a value by <= 2^-9 of it
FUSED_NORM = {"q_proj": "input_layernorm", "k_proj": "input_layernorm", "v_proj": "input_layernorm",
              "gate_proj": "post_attention_layernorm", "up_proj": "post_attention_layernorm"}


# --- the shared export --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(mixed_export):
    """The mixed plan `trtq quantize` exported (tests/conftest.py: the quantize tests read the same run)."""
    plan, plan_path, out = mixed_export
    return SimpleNamespace(plan=plan, plan_path=plan_path, out=out)


@pytest.fixture(scope="module")
def fake_quantized(exported, smollm2_model):
    """The ModelOpt model `trtq quantize` exported, re-made: float32, its bf16 copy, and that copy
    after the exporter's own rewrite of fused groups (unified_export_hf.requantize_resmooth_fused_llm_layers)."""
    from modelopt.torch.export.unified_export_hf import requantize_resmooth_fused_llm_layers

    from trtq.data import calibration_text, token_batches
    from trtq.quantize.apply import _bf16_copy, quantize_model

    model, tokenizer = smollm2_model
    batches = token_batches(tokenizer, calibration_text(), 4, 128, 3)
    fp32 = quantize_model(copy.deepcopy(model), exported.plan, batches)
    as_exported = _bf16_copy(fp32)
    with contextlib.redirect_stdout(io.StringIO()):
        requantize_resmooth_fused_llm_layers(as_exported)
    return SimpleNamespace(fp32=fp32, bf16=_bf16_copy(fp32), as_exported=as_exported)


@pytest.fixture(scope="module")
def rebuilt_bf16(exported, smollm2_model):
    return ckpt.load_checkpoint_model(ckpt.open_checkpoint(exported.out), smollm2_model[0], torch.bfloat16)


@pytest.fixture(scope="module")
def eval_ids(smollm2_model):
    from trtq.data import encode_text, evaluation_text

    return torch.tensor(encode_text(smollm2_model[1], evaluation_text())[:256]).view(2, 128)


def capture_inputs(model, names, ids):
    """{module name: its input} over one forward of `ids`."""
    modules = dict(model.named_modules())
    inputs = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
               for n in names]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def quantized_layers(plan):
    return {name: choice for name, choice in plan.layer_formats().items() if choice[0] != "bf16"}


# --- decoding: ModelOpt's packers, read back ------------------------------------------------------

@pytest.mark.parametrize("algo, out_features, in_features, group", [
    ("FP8", 10, 24, None), ("W8A8_SQ_PER_CHANNEL", 10, 24, None),
    ("W4A16_AWQ", 12, 256, 64), ("W4A16_AWQ", 6, 384, 128), ("W4A8_AWQ", 8, 256, 128),
])
def test_decoding_inverts_modelopt_packing(algo, out_features, in_features, group):
    """Random weights packed by ModelOpt's own to_quantized_weight (the exporter's packer), decoded:
    the codes come back where they were, with the scale of their own row and group."""
    from modelopt.torch.export.quant_utils import to_quantized_weight

    g = torch.Generator().manual_seed(out_features * in_features)
    weight = (torch.randn(out_features, in_features, generator=g) * torch.rand(out_features, 1, generator=g))
    weight = weight.to(torch.bfloat16).float()
    modelopt_name = {"FP8": "fp8", "W8A8_SQ_PER_CHANNEL": "int8_sq", "W4A16_AWQ": "int4_awq",
                     "W4A8_AWQ": "w4a8_awq"}[algo]
    tensors = {}
    if algo == "FP8":
        scale = weight.abs().amax() / 448
        expected = (weight / scale).to(torch.float8_e4m3fn).float() * scale
    elif algo == "W8A8_SQ_PER_CHANNEL":
        scale = weight.abs().amax(dim=1) / 127
        expected = (weight / scale[:, None]).round() * scale[:, None]
    else:
        scale = weight.view(out_features, -1, group).abs().amax(dim=-1) / 7
        per_element = scale.repeat_interleave(group, dim=1)
        expected = (weight / per_element).round().clamp(-8, 7) * per_element
        if algo == "W4A8_AWQ":
            tensors["weight_scale_2"] = expected.abs().amax() / 448
            expected = fp8_e4m3(expected, tensors["weight_scale_2"] * 448)
    tensors["weight"] = to_quantized_weight(weight, scale, modelopt_name, tensors.get("weight_scale_2"), group)
    tensors["weight_scale"] = scale
    decoded = ckpt.dequantize_weight(algo, tensors, out_features, in_features, group, torch.float32)
    assert torch.equal(decoded, expected)


def test_nvfp4_decodes_as_modelopt_and_the_trtq_reference():
    """NVFP4 cannot be calibrated on CPU; its packing (NVFP4QTensor.quantize, as the exporter calls
    it) decodes to NVFP4QTensor.dequantize and to trtq's reference NVFP4, and activations
    fake-quantize as the reference with a global scale of amax / (6 * 448)."""
    from modelopt.torch.export.quant_utils import to_quantized_weight
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    from trtq.sensitivity.quantizers import nvfp4

    g = torch.Generator().manual_seed(4)
    weight = torch.randn(24, 64, generator=g).to(torch.bfloat16)
    scale_2 = NVFP4QTensor.get_weights_scaling_factor_2(weight)
    scale, _ = NVFP4QTensor.get_weights_scaling_factor(weight, 16, scale_2)
    packed = to_quantized_weight(weight, scale, "nvfp4", scale_2, 16)
    assert packed.shape == (24, 32) and scale.dtype == torch.float8_e4m3fn
    tensors = {"weight": packed, "weight_scale": scale, "weight_scale_2": scale_2}
    decoded = ckpt.dequantize_weight("NVFP4", tensors, 24, 64, 16, torch.float32)
    theirs = NVFP4QTensor((24, 64), torch.float32, packed).dequantize(
        torch.float32, scale=scale, double_scale=scale_2, block_sizes={-1: 16})
    assert torch.equal(decoded, theirs)
    assert torch.equal(decoded, nvfp4(weight.float()))
    x = torch.randn(2, 5, 64, generator=g) * 3
    layer = ckpt.CheckpointLinear("x", ckpt.LayerQuant("NVFP4", 16), torch.zeros(8, 64), None, None,
                                  x.abs().amax() / (6 * 448))
    assert torch.equal(layer.quantize_input(x), nvfp4(x.reshape(10, 64)).reshape(x.shape))


# --- the real export --------------------------------------------------------------------------------

def test_checkpoint_under_test_holds_every_format_and_both_int4_group_sizes(exported):
    """The checkpoint the tests below decode, read back: ModelOpt wrote every format, INT4 at both group sizes."""
    config = json.loads((exported.out / "hf" / "hf_quant_config.json").read_text())
    quantized = config["quantization"]["quantized_layers"]
    written = {(v["quant_algo"], v.get("group_size")) for v in quantized.values()}
    assert written == {("FP8", None), ("W8A8_SQ_PER_CHANNEL", None), ("W4A16_AWQ", 64), ("W4A16_AWQ", 128),
                       ("W4A8_AWQ", 64), ("W4A8_AWQ", 128)}
    assert len(quantized) == sum(1 for f, _ in exported.plan.layer_formats().values() if f != "bf16")


def test_checkpoint_is_modelopts_export_of_the_as_exported_model(exported, fake_quantized):
    """ModelOpt's per-layer export (unified_export_hf._export_quantized_weight, what the exporter
    calls for every quantized Linear) of the as-exported model reproduces every tensor of the
    checkpoint bit for bit: that model is the reference the layer test below compares against."""
    from modelopt.torch.export.unified_export_hf import _export_quantized_weight
    from safetensors import safe_open

    modules = dict(fake_quantized.as_exported.named_modules())
    with safe_open(str(exported.out / "hf" / "model.safetensors"), "pt") as tensors:
        for name, (fmt, _) in quantized_layers(exported.plan).items():
            layer = copy.deepcopy(modules[name])
            with contextlib.redirect_stdout(io.StringIO()):
                _export_quantized_weight(layer, torch.bfloat16)
            for part in ("weight", "weight_scale", "weight_scale_2", "input_scale"):
                if f"{name}.{part}" in tensors.keys():
                    mine = getattr(layer, part)
                    theirs = tensors.get_tensor(f"{name}.{part}")
                    assert mine.dtype == theirs.dtype and torch.equal(
                        mine.view(torch.uint8) if mine.element_size() == 1 else mine, 
                        theirs.view(torch.uint8) if theirs.element_size() == 1 else theirs), f"{name}.{part}"
            quantizer = layer.input_quantizer
            if f"{name}.pre_quant_scale" in tensors.keys():
                assert torch.equal(quantizer.pre_quant_scale, tensors.get_tensor(f"{name}.pre_quant_scale")), name
            else:
                assert quantizer.pre_quant_scale is None, name


def _weight_as_fake_quantized(module) -> torch.Tensor:
    with torch.no_grad():
        return module.weight_quantizer(module.weight)


def _export_arithmetic_weight(module, fmt: str, group: int | None) -> torch.Tensor:
    """The weight as ModelOpt's packer rounds it (quant_utils.to_quantized_weight), written out:
    FP8 divides the bf16 weight by a 0-dim float32 scale, which PyTorch computes in bf16, then
    casts to E4M3; INT8 and INT4 divide by a float32 scale tensor in float32 and round half to even."""
    quantizer = module.weight_quantizer
    weight = module.weight.detach()
    if fmt == "fp8":
        scale = torch.tensor(quantizer.amax.float().item() / 448)
        return ((weight / scale).to(torch.float8_e4m3fn).float() * scale).to(torch.bfloat16)
    if fmt == "int8_sq":
        scale = quantizer.amax.float().reshape(-1, 1) / 127
        return ((weight / scale).round().clamp(-128, 127) * scale).to(torch.bfloat16)
    int4 = quantizer[0] if fmt == "w4a8_awq" else quantizer
    scale = (int4.amax.float().reshape(weight.shape[0], -1) / 7).repeat_interleave(group, dim=1)
    dequantized = ((weight / scale).round().clamp(-8, 7) * scale).to(torch.bfloat16)
    if fmt == "w4a8_awq":
        dequantized = fp8_e4m3(dequantized, quantizer[1].amax.float())
    return dequantized


def _norm_feeding(name: str) -> str | None:
    kind = name.rsplit(".", 1)[1]
    return f"{name.rsplit('.', 2)[0]}.{FUSED_NORM[kind]}" if kind in FUSED_NORM else None


def _print_table(title: str, stats: dict[tuple[str, str, str], dict[str, float]], columns: list[str]) -> None:
    print(f"\n{title}")
    print(f"{'format':9s} {'group':>5s} {'input':>6s} {'layers':>6s} " + " ".join(f"{c:>12s}" for c in columns))
    for (fmt, group, shares), row in sorted(stats.items()):
        print(f"{fmt:9s} {group:>5s} {shares:>6s} {int(row['layers']):6d} "
              + " ".join(f"{row[c]:12.5g}" for c in columns))


def _row(stats, fmt, group, name) -> dict[str, float]:
    shares = "shared" if _norm_feeding(name) else "own"
    return stats.setdefault((fmt, f"{group or '-'}", shares), {"layers": 0})


def _worst(row: dict[str, float], key: str, value: float) -> None:
    row[key] = max(row.get(key, 0.0), value)


def test_layers_reproduce_the_as_exported_fake_quantization(exported, fake_quantized, rebuilt_bf16, eval_ids,
                                                             capsys):
    """Per quantized layer, on the real hidden states of 2 x 128 evaluation tokens, in bf16, against
    ModelOpt's fake-quantized layer as exported:
      1. the rebuilt weight is the packer's arithmetic to the bit; where it differs from the fake
         quantizer's weight, that is the packer rounding differently (fraction measured, printed);
      2. pre_quant_scale and activation quantization are ModelOpt's input quantizer's, but for rare
         elements one step apart (the exported input_scale is amax / maxbound rounded to float32);
      3. the exact products of those operands differ by no more than |dW| @ |x_q| + |W| @ |dx_q|
         (fp32 accumulation aside), so 1. and 2. explain every output difference; the bf16 outputs
         differ by no more than that plus the two bf16 GEMMs' own rounding, which on this CPU rounds
         partial sums to bf16 (measured <= 1.2 x 2^-9 of sum |x||w| for ModelOpt's layers; the
         bound allows 2^-8 for each of the two).
    Printed as well: the same layers against the fake-quantized model before the exporter's rewrite
    (bf16, `_bf16_copy`), each fed the output of its own model's norm where one precedes it."""
    as_exported = dict(fake_quantized.as_exported.named_modules())
    before = dict(fake_quantized.bf16.named_modules())
    rebuilt = dict(rebuilt_bf16.model.named_modules())
    layers = quantized_layers(exported.plan)
    norms = sorted({n for n in map(_norm_feeding, layers) if n})
    inputs = capture_inputs(fake_quantized.as_exported, list(layers), eval_ids)
    inputs_before = capture_inputs(fake_quantized.bf16, list(layers) + norms, eval_ids)
    stats: dict[tuple[str, str, str], dict[str, float]] = {}
    stats_before: dict[tuple[str, str, str], dict[str, float]] = {}
    with torch.no_grad():
        for name, (fmt, group) in layers.items():
            theirs, mine = as_exported[name], rebuilt[name]
            assert isinstance(mine, ckpt.CheckpointLinear) and mine.quant.algo == ALGO[fmt], name
            fake_weight = _weight_as_fake_quantized(theirs)
            assert torch.equal(mine.weight, _export_arithmetic_weight(theirs, fmt, group)), name
            x = inputs[name]
            x_theirs, x_mine = theirs.input_quantizer(x), mine.quantize_input(x)
            weight_delta = (mine.weight.float() - fake_weight.float()).abs()
            input_delta = (x_mine.float() - x_theirs.float()).abs()
            magnitude = x_theirs.float().abs() @ fake_weight.float().abs().T
            explained = x_theirs.float().abs() @ weight_delta.T + input_delta @ mine.weight.float().abs().T
            exact = (torch.nn.functional.linear(x_mine.float(), mine.weight.float())
                     - torch.nn.functional.linear(x_theirs.float(), fake_weight.float())).abs()
            assert bool((exact <= explained + 1e-5 * magnitude).all()), name
            y_theirs, y_mine = theirs(x), mine(x)
            difference = (y_mine.float() - y_theirs.float()).abs()
            gemm = (y_theirs.float() - torch.nn.functional.linear(x_theirs.float(), fake_weight.float())).abs()
            assert bool((difference <= explained + 2 * BF16_ULP * magnitude + 1e-6).all()), name
            row = _row(stats, fmt, group, name)
            row["layers"] += 1
            _worst(row, "weights_off", float((mine.weight != fake_weight).float().mean()))
            _worst(row, "inputs_off", float((x_mine != x_theirs).float().mean()))
            _worst(row, "max_abs", float(difference.max()))
            _worst(row, "max_rel", float(difference.max() / y_theirs.float().abs().max()))
            _worst(row, "gemm_rounding", float((gemm / magnitude.clamp_min(1e-12)).max()))
            # The fake-quantized model before the export's rewrite of fused groups; the rewrite leaves
            # FP8 groups and layers that share no input as they were.
            norm = _norm_feeding(name)
            if fmt == "fp8" or not norm:
                assert torch.equal(_weight_as_fake_quantized(before[name]), fake_weight), name
                assert torch.equal(before[name].input_quantizer(x), x_theirs), name
            if norm:
                y_before = before[name](before[norm](inputs_before[norm]))
                y_rebuilt = mine(rebuilt[norm](inputs_before[norm]))
            else:
                y_before, y_rebuilt = before[name](inputs_before[name]), mine(inputs_before[name])
            difference = (y_rebuilt.float() - y_before.float()).abs()
            row = _row(stats_before, fmt, group, name)
            row["layers"] += 1
            _worst(row, "max_abs", float(difference.max()))
            _worst(row, "max_rel", float(difference.max() / y_before.float().abs().max()))
            _worst(row, "mean_rel", float(difference.mean() / y_before.float().abs().mean()))
    with capsys.disabled():
        _print_table("rebuilt checkpoint layer vs ModelOpt fake-quantized layer as exported (bf16), worst layer:",
                     stats, ["weights_off", "inputs_off", "max_abs", "max_rel", "gemm_rounding"])
        _print_table("rebuilt checkpoint layer vs fake-quantized layer before the export's rewrite (bf16):",
                     stats_before, ["max_abs", "max_rel", "mean_rel"])
    for key, row in stats.items():
        assert row["inputs_off"] < 1e-3, key
        assert row["gemm_rounding"] < 2 * BF16_ULP, key
        # FP8: the packer divides in bf16, and a bf16 rounding that lands on an E4M3 midpoint then rounds
        # to even: about 1/32 of evenly spread weights move one E4M3 step (the worst layer of this
        # GGUF-born model, whose weights sit on a grid, measured 7.6%). INT8/INT4: dividing by the scale,
        # not multiplying by its reciprocal, moves rare rounding ties.
        assert row["weights_off"] < (0.10 if key[0] == "fp8" else 0.002), key


def test_fused_groups_are_resmoothed_by_the_export(exported, fake_quantized, smollm2_model, capsys):
    """Against the fake-quantized model before export (float32, what `--plan` scores), each layer's
    error relative to the unquantized layer, on the same real hidden states: layers that share no
    input export unchanged (same error to 1%); q/k/v and gate/up in AWQ formats get one averaged
    pre_quant_scale (folded into the RMSNorm), SmoothQuant groups too: the error of those rises,
    by the measured ratio printed here, and stays within 15%."""
    from trtq.data import encode_text, evaluation_text

    reference, tokenizer = smollm2_model
    rebuilt = ckpt.load_checkpoint_model(ckpt.open_checkpoint(exported.out), reference)
    mine = dict(rebuilt.model.named_modules())
    before = dict(fake_quantized.fp32.named_modules())
    plain = dict(reference.named_modules())
    layers = quantized_layers(exported.plan)
    norms = {n for n in plain if n.endswith("layernorm")}
    ids = torch.tensor(encode_text(tokenizer, evaluation_text())[:256]).view(2, 128)
    inputs = capture_inputs(reference, list(layers) + sorted(norms), ids)
    errors: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with torch.no_grad():
        for name, (fmt, group) in layers.items():
            kind = name.rsplit(".", 1)[1]
            if kind in FUSED_NORM:
                norm = f"{name.rsplit('.', 2)[0]}.{FUSED_NORM[kind]}"
                x_plain, x_mine = plain[norm](inputs[norm]), mine[norm](inputs[norm])
            else:
                x_plain = x_mine = inputs[name]
            y_plain = plain[name](x_plain)
            error_before = float((before[name](x_plain) - y_plain).norm() / y_plain.norm())
            error_mine = float((mine[name](x_mine) - y_plain).norm() / y_plain.norm())
            shares = "fused" if kind in FUSED_NORM and fmt != "fp8" else "single"
            errors.setdefault((f"{fmt}/{group or '-'}", shares), []).append((error_before, error_mine))
    with capsys.disabled():
        print("\nrelative error vs the unquantized layer: fake quantization before export vs the checkpoint")
        for key, rows in sorted(errors.items()):
            before_mean = sum(b for b, _ in rows) / len(rows)
            mine_mean = sum(m for _, m in rows) / len(rows)
            print(f"{key[0]:14s} {key[1]:6s} n={len(rows):2d}  {before_mean:.4f} -> {mine_mean:.4f} "
                  f"(x{mine_mean / before_mean:.3f})")
    for (fmt, shares), rows in errors.items():
        ratio = sum(m for _, m in rows) / sum(b for b, _ in rows)
        assert ratio < (1.15 if shares == "fused" else 1.01), (fmt, shares, ratio)


def test_eval_checkpoint_scores_the_artifact(exported, fake_quantized, plan_eval, smollm2_model, tmp_path, capsys):
    """Through the CLI: `--checkpoint` and `--plan` with the same plan and calibration, and the
    as-exported fake-quantized model (float32 arithmetic) scored on the same windows.

    The checkpoint must score what the model it was packed from scores (0.5%: the packer's rounding
    of a few percent of FP8 weight codes and of rare INT ties; measured +0.10%). Its gap to `--plan` is the export itself (bf16
    weights and scales, fused groups resmoothed) and is measured and printed: on this small,
    heavily quantized model any re-rounding of that size moves perplexity by about 1%."""
    from trtq.data import encode_text, evaluation_text
    from trtq.eval.perplexity import evenly_spaced_windows, perplexity

    out_checkpoint = tmp_path / "checkpoint.json"
    code = main(["eval", "smollm2-135m", "--checkpoint", str(exported.out), *FAST_EVAL,
                 "--lm-eval", "trtq_devil_definitions", "--lm-eval-limit", "4", "-o", str(out_checkpoint)])
    err = capsys.readouterr().err
    assert code == 0, err
    by_checkpoint = load_artifact(out_checkpoint, EvalResult)
    by_plan = plan_eval  # the same plan file, calibration and windows (tests/eval/conftest.py)
    windows = evenly_spaced_windows(encode_text(smollm2_model[1], evaluation_text()), 128, 4)
    as_exported = perplexity(copy.deepcopy(fake_quantized.as_exported).float(), windows).ppl
    with capsys.disabled():
        print(f"\nperplexity over 4 x 128 tokens: reference {by_plan.ppl_bf16:.3f}; --plan {by_plan.ppl_quant:.3f}; "
              f"as exported (fake quant, float32) {as_exported:.3f}; --checkpoint {by_checkpoint.ppl_quant:.3f} "
              f"({100 * (by_checkpoint.ppl_quant / by_plan.ppl_quant - 1):+.2f}% vs --plan, "
              f"{100 * (by_checkpoint.ppl_quant / as_exported - 1):+.2f}% vs as exported)")
    assert by_checkpoint.ppl_bf16 == by_plan.ppl_bf16
    assert by_checkpoint.ppl_quant == pytest.approx(as_exported, rel=0.005)
    assert by_checkpoint.ppl_quant == pytest.approx(by_plan.ppl_quant, rel=0.05)

    assert by_checkpoint.source == "checkpoint" and by_checkpoint.checkpoint == str(exported.out)
    assert by_checkpoint.plan == str(exported.out / "plan.yaml")
    assert by_checkpoint.plan_sha256 == sha256_file(exported.plan_path)
    assert by_checkpoint.layer_formats == by_plan.layer_formats == {f: 42 for f in MIXED_FORMATS}
    inputs = by_checkpoint.metadata.inputs
    for relative in ("hf/model.safetensors", "hf/hf_quant_config.json", "hf/config.json", "plan.yaml"):
        assert inputs[relative].sha256 == sha256_file(exported.out / relative), relative
    assert "calib" not in inputs and by_checkpoint.metadata.seed is None
    assert any("AWQ layers carry no pre_quant_scale" in note for note in by_checkpoint.metadata.notes)
    [task] = by_checkpoint.lm_eval
    assert task.task == "trtq_devil_definitions" and task.samples == 4 and 0.0 <= task.quantized <= 1.0


# --- refusals: one line, exit 2 --------------------------------------------------------------------

def run_eval(capsys, *argv):
    code = main(["eval", "smollm2-135m", *argv])
    return code, capsys.readouterr().err


TINY = ["--seq-len", "16", "--windows", "1"]


def test_missing_directory_and_directory_without_quant_config(tmp_path, capsys):
    code, err = run_eval(capsys, "--checkpoint", str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1 and "checkpoint directory not found" in err
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    code, err = run_eval(capsys, "--checkpoint", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "no hf_quant_config.json" in err


@pytest.mark.parametrize("edit, error, needle", [
    (lambda q: q["quantized_layers"]["model.layers.0.self_attn.q_proj"].update(quant_algo="W4A4_MAGIC"),
     UnsupportedError, "quant_algo 'W4A4_MAGIC' is not one trtq eval can reproduce"),
    (lambda q: q["quantized_layers"]["model.layers.0.mlp.gate_proj"].pop("group_size"),
     ArtifactError, "needs a positive integer group_size"),
    (lambda q: q.update(kv_cache_quant_algo="FP8"), UnsupportedError, "the KV cache is quantized (FP8)"),
    (lambda q: q.pop("quantized_layers"), ArtifactError, "MIXED_PRECISION without a quantized_layers"),
])
def test_malformed_quant_config_is_refused_before_the_model_loads(exported, tmp_path, capsys, edit, error, needle):
    directory = copy_checkpoint(exported.out, tmp_path / "ckpt")
    edit_json(directory / "hf" / "hf_quant_config.json", lambda data: edit(data["quantization"]))
    with pytest.raises(error, match=re.escape(needle)):
        ckpt.open_checkpoint(directory)
    code, err = run_eval(capsys, "--checkpoint", str(directory))
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_checkpoint_of_another_model_is_refused(exported, tmp_path, capsys):
    directory = copy_checkpoint(exported.out, tmp_path / "ckpt")
    edit_json(directory / "hf" / "config.json", lambda c: c.update(hidden_size=4096))
    code, err = run_eval(capsys, "--checkpoint", str(directory))
    assert code == 2 and err.count("\n") == 1 and "its config.json has hidden_size 4096" in err, err
    directory = copy_checkpoint(exported.out, tmp_path / "ckpt2")
    plan = (directory / "plan.yaml").read_text().replace("model: smollm2-135m", "model: llama-3.1-8b")
    (directory / "plan.yaml").write_text(plan)
    (directory / "quantize_summary.json").unlink()
    code, err = run_eval(capsys, "--checkpoint", str(directory))
    assert code == 2 and err.count("\n") == 1 and "was made for model 'llama-3.1-8b', not 'smollm2-135m'" in err


def test_quantized_checkpoint_as_the_reference_model_is_refused(exported, capsys):
    code = main(["eval", str(exported.out / "hf"), "--checkpoint", str(exported.out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a quantized checkpoint" in err, err


def test_evaluating_on_the_calibration_text_is_refused(exported, capsys):
    from trtq.data import CALIBRATION_PATH

    code, err = run_eval(capsys, "--checkpoint", str(exported.out), "--text", str(CALIBRATION_PATH))
    assert code == 2 and "is the text" in err and "was calibrated on" in err


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.pop("model.layers.0.self_attn.o_proj.weight_scale"),
     "lacks tensor model.layers.0.self_attn.o_proj.weight_scale, which a W8A8_SQ_PER_CHANNEL layer needs"),
    (lambda t: t.pop("model.layers.3.input_layernorm.weight"), "lacks tensor model.layers.3.input_layernorm.weight"),
    (lambda t: t.__setitem__("model.layers.0.mlp.gate_proj.weight_scale", torch.ones(1536, 18)),
     "model.layers.0.mlp.gate_proj.weight_scale is float32 [1536, 18]; a W4A16_AWQ layer 576 -> 1536 needs "
     "float32 [1536, 9]"),
    (lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.k_scale", torch.tensor(1.0)),
     "model.layers.0.self_attn.k_proj.k_scale is not a tensor of the model"),
])
def test_missing_or_misshapen_tensors_are_refused(exported, smollm2_model, tmp_path, capsys, edit, needle):
    directory = copy_checkpoint(exported.out, tmp_path / "ckpt")
    (directory / "hf" / "model.safetensors").unlink()
    shutil.copyfile(exported.out / "hf" / "model.safetensors", directory / "hf" / "model.safetensors")
    rewrite_weights(directory, edit)
    with pytest.raises(ArtifactError, match=re.escape(needle)):
        ckpt.load_checkpoint_model(ckpt.open_checkpoint(directory), smollm2_model[0])
    code, err = run_eval(capsys, "--checkpoint", str(directory), *TINY)
    # The checkpoint is rebuilt right after the model loads, before the reference is scored.
    *progress, last = err.splitlines()
    assert code == 2 and last.startswith("trtq: error:") and needle in last, err
    assert len(progress) == 1 and progress[0].startswith("loaded smollm2-135m") and "Traceback" not in err


def test_single_format_checkpoint_with_excluded_layers(smollm2_model, smollm2_graph, tmp_path):
    """One format for every quantized layer: ModelOpt writes quant_algo FP8 and exclude_modules
    instead of a per-layer map; the excluded layers load as the bf16 Linears they are."""
    from trtq.data import calibration_text, token_batches
    from trtq.quantize.apply import _bf16_copy, export_checkpoint, quantize_model

    model, tokenizer = smollm2_model
    plan = plan_from_graph(smollm2_graph, lambda i, name, kind: "bf16" if kind == "down_proj" else "fp8")
    quantized = quantize_model(copy.deepcopy(model), plan, token_batches(tokenizer, calibration_text(), 2, 64, 0))
    out = export_checkpoint(quantized, None, plan, tmp_path / "fp8", model_name="smollm2-135m")
    config = json.loads((out / "hf" / "hf_quant_config.json").read_text())["quantization"]
    assert config["quant_algo"] == "FP8" and "quantized_layers" not in config
    assert {"lm_head", "model.layers.0.mlp.down_proj"} <= set(config["exclude_modules"])
    loaded = ckpt.load_checkpoint_model(ckpt.open_checkpoint(out), model, torch.bfloat16)
    assert loaded.layer_formats == {"fp8": 180, "bf16": 30} and not loaded.folded_pre_quant_scale
    expected = dict(_bf16_copy(quantized).named_modules())
    rebuilt = dict(loaded.model.named_modules())
    for name, (fmt, _) in plan.layer_formats().items():
        if fmt == "bf16":
            assert type(rebuilt[name]) is torch.nn.Linear and torch.equal(rebuilt[name].weight, expected[name].weight)
        else:
            assert torch.equal(rebuilt[name].weight, _export_arithmetic_weight(expected[name], "fp8", None)), name
            amax = expected[name].input_quantizer.amax.float()
            assert float(rebuilt[name].input_scale * 448) == pytest.approx(float(amax), rel=1e-6), name


@pytest.mark.parametrize("fixture, outcome", [
    ("fp8_nvfp4", {"model.layers.0.self_attn.q_proj": ("fp8", None), "model.layers.0.mlp.gate_proj": ("nvfp4", 16)}),
    ("fp8_only", {"model.layers.7.mlp.down_proj": ("fp8", None), "lm_head": None}),
    ("fp8_w4a8awq_kvfp8", "the KV cache is quantized (FP8)"),
])
def test_configs_of_the_build_fixtures(tmp_path, fixture, outcome):
    """The hand-written ModelOpt configs of tests/build/checkpoints: NVFP4 layers and single-format
    exclusions read as ModelOpt means them; a quantized KV cache is refused."""
    source = Path(__file__).parents[1] / "build" / "checkpoints" / fixture / "hf"
    directory = tmp_path / "ckpt"
    shutil.copytree(source, directory / "hf")
    (directory / "hf" / "model.safetensors").write_bytes(b"")  # not read before a model is rebuilt
    if isinstance(outcome, str):
        with pytest.raises(UnsupportedError, match=re.escape(outcome)):
            ckpt.open_checkpoint(directory)
        return
    checkpoint = ckpt.open_checkpoint(directory)
    for layer, expected in outcome.items():
        quant = checkpoint.layer_quant(layer)
        assert (None if quant is None else (quant.format, quant.group_size)) == expected, layer
