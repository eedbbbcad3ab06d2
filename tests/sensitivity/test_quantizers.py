"""The reference quantize-dequantize against ModelOpt (the truth) and against NVFP4 by hand.

ModelOpt side: the weight_quantizer of every quantizable Linear of the real
SmolLM2, configured from the format's ModelOpt preset with the block size the
registry picks for that layer, calibrated with plain max calibration and input
quantizers off. That isolates the quantizer arithmetic: AWQ's pre_quant_scale
and SmoothQuant's smoothing rewrite the weight before quantization, which the
reference (round-to-nearest on W itself) deliberately does not model.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from trtq.registry import get_format
from trtq.sensitivity import quantizers
from trtq.sensitivity.quantizers import quantize_dequantize

MODELOPT_CPU_FORMATS = ["fp8", "int8_sq", "int4_awq", "w4a8_awq"]


def _weight_only_config(fmt, layer_groups: dict[str, int | None]) -> dict:
    """The format's preset, max calibration, input quantizers off, per-layer block sizes."""
    import modelopt.torch.quantization as mtq

    preset = copy.deepcopy(getattr(mtq, fmt.modelopt_config))
    weight_cfg = next(e["cfg"] for e in preset["quant_cfg"] if e.get("quantizer_name") == "*weight_quantizer")
    entries = [{"quantizer_name": "*", "enable": False}]
    for key, group_size in layer_groups.items():
        cfg = copy.deepcopy(weight_cfg)
        for stage in cfg if isinstance(cfg, list) else [cfg]:
            if "block_sizes" in stage:
                stage["block_sizes"][-1] = group_size
        entries.append({"quantizer_name": f"*{key}.weight_quantizer", "cfg": cfg})
    return {"quant_cfg": entries, "algorithm": "max"}


@pytest.fixture(scope="module")
def model_linears(smollm2_model, smollm2_graph):
    modules = dict(smollm2_model[0].named_modules())
    return {layer.name: modules[layer.name] for layer in smollm2_graph.layers}


@pytest.mark.parametrize("format_name", MODELOPT_CPU_FORMATS)
def test_reference_matches_modelopt_weight_fake_quant_on_every_layer(format_name, model_linears):
    import modelopt.torch.quantization as mtq

    fmt = get_format(format_name)
    keys = {name: name.replace(".", "_") for name in model_linears}
    holder = torch.nn.ModuleDict({keys[name]: copy.deepcopy(linear) for name, linear in model_linears.items()})
    groups = {keys[name]: fmt.group_size_for(linear.in_features) for name, linear in model_linears.items()}
    if fmt.block_sizes:
        assert set(groups.values()) == {64, 128}  # SmolLM2: 576 -> 64, 1536 (down_proj) -> 128

    def forward_loop(module):
        for linear in module.values():
            linear(torch.zeros(1, linear.in_features))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(holder, _weight_only_config(fmt, groups), forward_loop)

    mismatched = []
    with torch.no_grad():
        for name, linear in model_linears.items():
            quantized = holder[keys[name]]
            assert quantized.weight_quantizer.is_enabled and not quantized.input_quantizer.is_enabled
            truth = quantized.weight_quantizer(quantized.weight)
            reference = quantize_dequantize(linear.weight, fmt, groups[keys[name]])
            assert not torch.equal(truth, linear.weight)  # the quantizer really quantized
            if not torch.equal(truth, reference):
                mismatched.append(f"{name}: {int((truth != reference).sum())} elements")
    assert not mismatched, f"{format_name}: reference differs from ModelOpt on {len(mismatched)} layers, " \
                           f"e.g. {mismatched[:3]}"


def test_nvfp4_reference_matches_modelopt_export_path_on_real_layers(model_linears):
    # ModelOpt's NVFP4 fake quantizer needs CUDA, but the export path's NVFP4QTensor
    # quantize/dequantize is plain torch: a second, independent check on the real weights.
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    for name in ["model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj",
                 "model.layers.29.self_attn.v_proj"]:
        weight = model_linears[name].weight.detach()
        packed, block_scale, global_scale = NVFP4QTensor.quantize(weight.clone(), 16)
        truth = packed.dequantize(dtype=torch.float32, scale=block_scale, double_scale=global_scale,
                                  block_sizes={-1: 16})
        assert torch.equal(quantize_dequantize(weight, get_format("nvfp4")), truth), name


# --- NVFP4 by hand -----------------------------------------------------------------------------

def test_nvfp4_hand_computed_block():
    # One 16-element block holds the tensor's amax, 6.0: global scale = 6 / (6 * 448) = 1/448,
    # block scale = 6 / (6 * global) = 448 exactly in E4M3, so the step is 448 * (1/448) = 1 and
    # the elements round straight onto the E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}, ties to even.
    block = torch.tensor([6.0, -6.0, 0.24, 0.25, 0.26, 0.75, -0.75, 1.25,
                          1.75, 2.5, 3.5, 5.0, 5.1, -2.9, 0.0, 4.4])
    expected = torch.tensor([6.0, -6.0, 0.0, 0.0, 0.5, 1.0, -1.0, 1.0,
                             2.0, 2.0, 4.0, 4.0, 6.0, -3.0, 0.0, 4.0])
    w = block.reshape(1, 16)
    block_scale, global_scale = quantizers.nvfp4_scales(w)
    assert global_scale.item() == pytest.approx(1 / 448, rel=1e-7)
    assert block_scale.dtype == torch.float8_e4m3fn and block_scale.float().item() == 448.0
    assert torch.equal(quantize_dequantize(w, get_format("nvfp4"))[0], expected)


def test_nvfp4_hand_computed_two_blocks_with_e4m3_scale_rounding():
    # Tensor amax 10.5 = 6 * 448 / 256: global scale = 2^-8 exactly.
    # Block 0 holds the amax: block scale 10.5 / (6 * 2^-8) = 448, step 448 * 2^-8 = 1.75.
    # Block 1's amax is 1.3: block scale 1.3 / (6 * 2^-8) = 55.47, which E4M3 (step 4 between 32
    # and 64) stores as 56, so its step is 56 * 2^-8 = 0.21875.
    first = torch.zeros(16)
    first[:4] = torch.tensor([10.5, -2.625, 4.375, 0.7875])
    second = torch.zeros(16)
    second[:5] = torch.tensor([1.3, -0.3, 0.55, 0.546875, 0.3828125])
    w = torch.cat([first, second]).reshape(1, 32)
    block_scale, global_scale = quantizers.nvfp4_scales(w)
    assert global_scale.item() == 2.0**-8
    assert block_scale.float().tolist() == [[448.0, 56.0]]
    q = quantize_dequantize(w, get_format("nvfp4"))[0]
    # /1.75: 6, -1.5, 2.5 (tie -> 2, even mantissa), 0.45 -> 0.5
    assert q[:4].tolist() == [10.5, -2.625, 2 * 1.75, 0.5 * 1.75]
    step = 0.21875
    # /step: 5.94 -> 6; -1.37 -> -1.5; 2.51 -> 3; 2.5 (tie) -> 2; 1.75 (tie) -> 2
    assert q[16:21].tolist() == [6 * step, -1.5 * step, 3 * step, 2 * step, 2 * step]
    assert torch.count_nonzero(q[4:16]) == 0 and torch.count_nonzero(q[21:]) == 0


def test_nvfp4_all_zero_block_stays_zero_and_needs_16_wide_rows():
    w = torch.zeros(2, 32)
    w[0, 0] = 1.0
    q = quantize_dequantize(w, get_format("nvfp4"))
    assert torch.equal(q, w)
    assert not get_format("nvfp4").available_for(24)


def test_int8_rounds_ties_like_modelopt():
    # x * (127 / amax) = 63.5 exactly: rounds half to even (64), as torch.round in ModelOpt does.
    w = torch.tensor([[127.0, 63.5, -63.5, 62.5]])
    assert quantize_dequantize(w, get_format("int8_sq")).tolist() == [[127.0, 64.0, -64.0, 62.0]]


# --- activations: trtq's kernel_inputs against ModelOpt's own input quantizers -----------------------

def _inputs_with_outlier_channels(tokens: int = 48, width: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(tokens, width, generator=generator)
    return x * torch.logspace(-1, 1.5, width)[torch.randperm(width, generator=generator)]


@pytest.mark.parametrize("format_name", ["fp8", "w4a8_awq", "int8_sq", "int4_awq"])
def test_kernel_inputs_match_modelopt_input_quantizers(format_name):
    """The activation operand each format's kernel multiplies: trtq's reference against the input_quantizer
    ModelOpt itself builds and calibrates from the format's preset (algorithm included: SmoothQuant
    computes its own smoothing scales), on one Linear fed inputs with outlier channels."""
    import modelopt.torch.quantization as mtq

    from trtq.sensitivity.operands import kernel_inputs, smoothquant_scales

    fmt = get_format(format_name)
    x = _inputs_with_outlier_channels()
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], 32, bias=False)
    holder = torch.nn.Sequential(copy.deepcopy(linear))
    config = copy.deepcopy(getattr(mtq, fmt.modelopt_config))
    for entry in config["quant_cfg"]:
        for stage in entry.get("cfg") if isinstance(entry.get("cfg"), list) else [entry.get("cfg") or {}]:
            if "block_sizes" in stage:
                stage["block_sizes"][-1] = fmt.group_size_for(x.shape[1])
    if "awq" in str(config["algorithm"]):
        # AWQ also rescales the activations (pre_quant_scale), a search trtq's reference leaves out (see
        # the module docstring): the preset's quantizers, calibrated by plain max, isolate the arithmetic.
        config["algorithm"] = "max"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(holder, config, lambda module: module(x))
    quantizer = holder[0].input_quantizer
    with torch.no_grad():
        truth = quantizer(x) if quantizer.is_enabled else x
    smooth = smoothquant_scales(x.abs().amax(dim=0))
    mine = kernel_inputs(x, fmt, smooth)
    if fmt.act_dtype == "bf16":
        # W4A16: ModelOpt leaves the activations alone (its input quantizer is off); the kernel sees bf16.
        assert not quantizer.is_enabled
        assert torch.equal(mine, x.to(torch.bfloat16).float())
        return
    assert quantizer.is_enabled and not torch.equal(truth, x)   # ModelOpt really quantized
    if fmt.act_dtype == "int8":
        # ModelOpt smooths inside the quantizer (pre_quant_scale = 1/s); trtq hands the kernel X / s.
        assert quantizer.pre_quant_scale is not None
        torch.testing.assert_close(1 / quantizer.pre_quant_scale.flatten(), smooth, rtol=1e-6, atol=0)
    torch.testing.assert_close(mine, truth, rtol=1e-6, atol=1e-7)


def test_fp8_block_reference_matches_modelopt_2d_blockwise_on_real_layers(model_linears):
    """fp8_block's weight: ModelOpt's own FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG quantizer, bit for bit, on the
    SmolLM2 layers 128 divides (down_proj, 1536 wide; 576 rows = 4.5 tiles, so the partial tile is covered)."""
    import modelopt.torch.quantization as mtq

    fmt = get_format("fp8_block")
    chosen = {name: linear for name, linear in model_linears.items() if fmt.available_for(linear.in_features)}
    assert chosen and all(linear.in_features == 1536 for linear in chosen.values())
    assert not any(fmt.available_for(linear.in_features) for name, linear in model_linears.items()
                   if name not in chosen)  # 576-wide layers are gated off
    keys = {name: name.replace(".", "_") for name in chosen}
    holder = torch.nn.ModuleDict({keys[name]: copy.deepcopy(linear) for name, linear in chosen.items()})
    preset = copy.deepcopy(mtq.FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(holder, preset, lambda m: [lin(torch.zeros(1, lin.in_features)) for lin in m.values()])
    with torch.no_grad():
        for name, linear in chosen.items():
            quantized = holder[keys[name]]
            assert not quantized.input_quantizer.is_enabled
            truth = quantized.weight_quantizer(quantized.weight)
            assert not torch.equal(truth, linear.weight)
            assert torch.equal(quantize_dequantize(linear.weight, fmt), truth), name


def test_fp8_block_scales_by_hand():
    """One scale per 128x128 tile: a large value in one tile leaves the other tiles' resolution alone."""
    w = torch.full((256, 256), 0.01)
    w[0, 0] = 100.0                      # tile (0, 0) only
    q = quantizers.fp8_blockwise_2d(w)
    assert q[0, 0] == 100.0
    # tile (0, 0): scale 448/100, 0.01 -> 0.0448 -> e4m3 11 x 2^-8 (its step there is 2^-8); other tiles:
    # 0.01 is their amax and maps to 448 exactly
    assert q[1, 1] == pytest.approx(11 * 2**-8 * 100 / 448, rel=1e-6)
    assert torch.all(q[128:, :] == q[128, 128]) and q[128, 128] == pytest.approx(0.01, rel=1e-6)
    assert torch.all(q[:128, 128:] == q[128, 128])


def test_fp8_activation_groups_by_hand():
    x = torch.ones(2, 256)
    x[0, 5] = 448.0 * 4                  # group 0 of token 0: scale 1/4, ones -> 0.25 * ... representable
    x[1, 200] = 3.3                      # group 1 of token 1
    q = quantizers.fp8_groupwise(x)
    assert q[0, 5] == x[0, 5] and torch.all(q[0, 128:] == 1.0) and torch.all(q[1, :128] == 1.0)
    assert q[1, 200] == pytest.approx(3.3, rel=2 ** -4)   # its group's amax: exact up to e4m3 rounding
    per_tensor = quantizers.fp8_e4m3(x)
    assert not torch.equal(per_tensor, q)  # one scale for all would flush the ones of token 1 coarser
