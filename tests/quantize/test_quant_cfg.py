"""Plan -> ModelOpt quant_cfg: exact entries, fused groups, bf16 layers, presets untouched; and the
config applied by ModelOpt to a tiny Llama, layer by layer."""

from __future__ import annotations

import copy

import pytest

from tests.helpers.plans import group, plan_of
from trtq.errors import InputError, UnsupportedError
from trtq.quantize.apply import check_runnable_here
from trtq.quantize.quant_cfg import build_quant_cfg, calibration_stages, resolve_plan

QKV = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]
GATE_UP = ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
INT4_64 = {"num_bits": 4, "block_sizes": {"type": "static", -1: 64}}
FP8 = {"num_bits": (4, 3), "axis": None}


def mixed_plan():
    return plan_of([
        group("model.layers.0.self_attn.qkv", QKV, "int4_awq", 64, kind="qkv"),
        group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8"),
        group("model.layers.0.mlp.gate_up", GATE_UP, "w4a8_awq", 64, kind="gate_up"),
        group("model.layers.0.mlp.down_proj", ["model.layers.0.mlp.down_proj"], "bf16", in_features=1536),
        group("model.layers.1.self_attn.o_proj", ["model.layers.1.self_attn.o_proj"], "int8_sq"),
    ])


def test_per_layer_entries_are_exact_and_come_last():
    config = build_quant_cfg(mixed_plan())
    entries = config["quant_cfg"]
    assert entries[0] == {"quantizer_name": "*", "enable": False}
    expected_tail = []
    for name in QKV:  # a fused group: every member gets the group's format
        expected_tail += [
            {"quantizer_name": f"*{name}.weight_quantizer", "cfg": INT4_64},
            {"quantizer_name": f"*{name}.input_quantizer", "enable": False},
        ]
    expected_tail += [
        {"quantizer_name": "*model.layers.0.self_attn.o_proj.weight_quantizer", "cfg": FP8},
        {"quantizer_name": "*model.layers.0.self_attn.o_proj.input_quantizer", "cfg": FP8},
    ]
    for name in GATE_UP:
        expected_tail += [
            {"quantizer_name": f"*{name}.weight_quantizer", "cfg": [INT4_64, FP8]},
            {"quantizer_name": f"*{name}.input_quantizer", "cfg": FP8},
        ]
    expected_tail += [
        {"quantizer_name": "*model.layers.0.mlp.down_proj.weight_quantizer", "enable": False},
        {"quantizer_name": "*model.layers.0.mlp.down_proj.input_quantizer", "enable": False},
        {"quantizer_name": "*model.layers.1.self_attn.o_proj.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*model.layers.1.self_attn.o_proj.input_quantizer",
         "cfg": {"num_bits": 8, "axis": None}},
    ]
    assert entries[-len(expected_tail):] == expected_tail
    # ModelOpt's default exclusions sit between the global disable and the per-layer entries.
    middle = entries[1:-len(expected_tail)]
    assert {"quantizer_name": "*lm_head*", "enable": False} in middle
    assert all(e.get("enable") is False for e in middle)
    assert not any("kv_bmm" in e["quantizer_name"] or "k_bmm" in e["quantizer_name"] for e in entries)
    assert config["algorithm"] is None  # it configures; calibration runs per algorithm (calibration_stages)


def test_config_validates_as_a_modelopt_quantize_config():
    from modelopt.torch.quantization.config import QuantizeConfig

    parsed = QuantizeConfig(**build_quant_cfg(mixed_plan()))
    names = [e["quantizer_name"] for e in parsed.quant_cfg]
    assert "*model.layers.0.mlp.gate_proj.weight_quantizer" in names


def test_presets_are_not_mutated():
    import modelopt.torch.quantization as mtq

    names = ("FP8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG", "INT4_AWQ_CFG", "W4A8_AWQ_BETA_CFG")
    before = {n: copy.deepcopy(getattr(mtq, n)) for n in names}
    config = build_quant_cfg(mixed_plan())
    for entry in config["quant_cfg"]:  # the returned entries share nothing with the presets
        if "cfg" in entry:
            for cfg in entry["cfg"] if isinstance(entry["cfg"], list) else [entry["cfg"]]:
                cfg["num_bits"] = 99
                cfg.get("block_sizes", {})[-1] = 7
    assert {n: getattr(mtq, n) for n in names} == before
    assert mtq.INT4_AWQ_CFG["quant_cfg"][1]["cfg"]["block_sizes"][-1] == 128


def test_group_size_128_kept_where_the_plan_says_128():
    plan = plan_of([group("model.layers.0.mlp.down_proj", ["model.layers.0.mlp.down_proj"], "int4_awq", 128,
                          in_features=1536)])
    entry = build_quant_cfg(plan)["quant_cfg"][-2]
    assert entry["cfg"]["block_sizes"][-1] == 128


def test_calibration_stages_without_awq():
    plan = plan_of([group("a.o_proj", ["a.o_proj"], "int8_sq"), group("b.o_proj", ["b.o_proj"], "fp8")])
    assert [(a if isinstance(a, str) else a["method"], layers) for a, layers in calibration_stages(plan)] == [
        ("smoothquant", ["a.o_proj"]), ("max", ["b.o_proj"])]
    plan = plan_of([group("b.o_proj", ["b.o_proj"], "fp8"), group("c.o_proj", ["c.o_proj"], "bf16")])
    assert calibration_stages(plan) == [("max", ["b.o_proj"])]


def test_calibration_stages_split_layers_by_algorithm():
    stages = calibration_stages(mixed_plan())
    methods = [a if isinstance(a, str) else a["method"] for a, _ in stages]
    assert methods == ["smoothquant", "awq_lite", "max"]
    assert stages[0][1] == ["model.layers.1.self_attn.o_proj"]
    assert stages[1][1] == QKV + GATE_UP
    assert stages[2][1] == ["model.layers.0.self_attn.o_proj"]


def test_assignment_mapping_is_accepted_like_a_plan():
    plan = mixed_plan()
    assert build_quant_cfg(plan.layer_formats()) == build_quant_cfg(plan)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([group("x", ["x"], "int4_awq", None)], "x: format int4_awq needs a group_size"),
        ([group("x", ["x"], "int4_awq", 128)], "x: group_size 128 does not divide its input width 576"),
        ([group("x", ["x"], "fp8", 64)], "x: format fp8 takes no group_size (got 64)"),
        ([group("x", ["x"], "int3")], "unknown format 'int3'"),
        ([group("x", ["y"], "fp8"), group("z", ["y"], "fp8")], "names layer y more than once"),
        ([group("x", [], "fp8")], "plan group x has no member layers"),
        ([], "plan has no layers"),
    ],
)
def test_malformed_plans_are_one_line_input_errors(groups, message):
    with pytest.raises(InputError) as info:
        build_quant_cfg(plan_of(groups))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_nvfp4_refused_without_cuda_naming_layers_and_format():
    plan = plan_of([group("model.layers.0.self_attn.qkv", QKV, "nvfp4", 16),
                    group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")])
    with pytest.raises(UnsupportedError) as info:
        check_runnable_here(plan, cuda_available=False)
    message = str(info.value)
    assert "\n" not in message
    assert "3 layers in nvfp4" in message and ", ".join(QKV) in message
    assert "o_proj" not in message
    check_runnable_here(plan, cuda_available=True)
    assert [fmt.name for _, fmt, _ in resolve_plan(plan).layers] == ["nvfp4"] * 3 + ["fp8"]


# --- applied by ModelOpt to a tiny randomly initialised Llama (seconds, not minutes) ---

def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config.architectures = ["LlamaForCausalLM"]
    return LlamaForCausalLM(config).eval()


def tiny_plan():
    groups = []
    fmts = {0: ("int4_awq", 64, "fp8", "w4a8_awq", 64, "bf16"), 1: ("int8_sq", None, "bf16", "fp8", None, "int4_awq")}
    for block, (attn, attn_gs, o_fmt, mlp, mlp_gs, down) in fmts.items():
        p = f"model.layers.{block}"
        groups += [
            group(f"{p}.self_attn.qkv", [f"{p}.self_attn.{x}_proj" for x in "qkv"], attn, attn_gs, 128, 256, "qkv"),
            group(f"{p}.self_attn.o_proj", [f"{p}.self_attn.o_proj"], o_fmt, None, 128, 128, "o_proj"),
            group(f"{p}.mlp.gate_up", [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], mlp, mlp_gs, 128, 384, "gate_up"),
            group(f"{p}.mlp.down_proj", [f"{p}.mlp.down_proj"], down, 64 if down == "int4_awq" else None, 192, 128,
                  "down_proj"),
        ]
    return plan_of(groups, model="tiny")


def test_modelopt_applies_each_layer_as_planned_on_a_tiny_llama(monkeypatch):
    import torch

    from trtq.quantize import quant_cfg
    from trtq.quantize.apply import quantize_model

    model = tiny_llama()
    batches = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(batches[:1]).logits
    checked = []
    check_group_size = quant_cfg._check_group_size
    monkeypatch.setattr(quant_cfg, "_check_group_size", lambda where, *a: (checked.append(where),
                                                                           check_group_size(where, *a)))
    quantize_model(model, tiny_plan(), batches)
    # The plan is checked once (resolve_plan), not once per step: one check per layer.
    assert len(checked) == len(tiny_plan().layer_formats())
    modules = dict(model.named_modules())
    for layer, (fmt, group_size) in tiny_plan().layer_formats().items():
        weight_q, input_q = modules[layer].weight_quantizer, modules[layer].input_quantizer
        if fmt == "bf16":
            assert not weight_q.is_enabled and not input_q.is_enabled, layer
            continue
        assert weight_q.is_enabled, layer
        first = weight_q[0] if fmt == "w4a8_awq" else weight_q
        if fmt in ("int4_awq", "w4a8_awq"):
            assert first.num_bits == 4 and first.block_sizes[-1] == group_size, layer
            assert input_q.is_enabled == (fmt == "w4a8_awq"), layer
            assert input_q.pre_quant_scale is not None, layer  # AWQ-lite ran on this layer
        if fmt == "fp8":
            assert weight_q.num_bits == (4, 3) and input_q.num_bits == (4, 3) and input_q.axis is None, layer
            assert input_q.pre_quant_scale is None, layer  # no AWQ/SmoothQuant scaling leaked onto FP8
            assert input_q.amax.numel() == 1, layer
        if fmt == "int8_sq":
            assert weight_q.num_bits == 8 and weight_q.axis == 0 and input_q.num_bits == 8, layer
            assert input_q.pre_quant_scale is not None and input_q.amax.numel() == 1, layer  # SmoothQuant ran
    assert not modules["lm_head"].weight_quantizer.is_enabled
    with torch.no_grad():
        quantized = model(batches[:1]).logits
    assert torch.isfinite(quantized).all()
    assert not torch.equal(quantized, reference)


def test_plan_layers_must_be_linear_layers_of_the_model():
    import torch

    from trtq.quantize.apply import quantize_model

    batches = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    missing = plan_of([group("model.layers.7.self_attn.o_proj", ["model.layers.7.self_attn.o_proj"], "fp8", None,
                             128, 128)])
    with pytest.raises(InputError, match="plan layer model.layers.7.self_attn.o_proj is not a module of this model"):
        quantize_model(tiny_llama(), missing, batches)
    not_linear = plan_of([group("model.layers.0.mlp", ["model.layers.0.mlp"], "fp8", None, 128, 128)])
    with pytest.raises(InputError, match="is a LlamaMLP, not a Linear layer"):
        quantize_model(tiny_llama(), not_linear, batches)
    with pytest.raises(InputError, match="calibration batches must be a non-empty"):
        quantize_model(tiny_llama(), tiny_plan(), torch.zeros(0, 16, dtype=torch.long))


def test_fp8_block_entries_come_from_modelopts_2d_blockwise_preset_and_quantize_refuses_it():
    import modelopt.torch.quantization as mtq

    plan = plan_of([group("model.layers.0.mlp.down_proj", ["model.layers.0.mlp.down_proj"], "fp8_block", 128,
                          in_features=1536),
                    group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")])
    entries = {e["quantizer_name"]: e for e in build_quant_cfg(plan)["quant_cfg"]}
    preset_weight = next(e["cfg"] for e in mtq.FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG["quant_cfg"]
                         if e.get("quantizer_name") == "*weight_quantizer")
    weight = entries["*model.layers.0.mlp.down_proj.weight_quantizer"]["cfg"]
    assert weight["num_bits"] == (4, 3) and weight["block_sizes"] == {-1: 128, -2: 128} == preset_weight["block_sizes"]
    # activations: quantized by TensorRT-LLM's kernel at run time in 1x128 groups, nothing to calibrate
    assert entries["*model.layers.0.mlp.down_proj.input_quantizer"] == {
        "quantizer_name": "*model.layers.0.mlp.down_proj.input_quantizer", "enable": False}
    with pytest.raises(UnsupportedError) as info:
        check_runnable_here(plan, cuda_available=True)
    message = str(info.value)
    assert "\n" not in message and "1 layers in fp8_block (model.layers.0.mlp.down_proj)" in message
    assert "fp8_pb_wo" in message and "re-plan without fp8_block" in message and "o_proj" not in message


def test_kv_cache_format_adds_modelopts_kv_preset_last():
    import modelopt.torch.quantization as mtq

    from trtq.quantize.quant_cfg import kv_cache_entries

    plan = tiny_plan()
    assert not any("bmm_quantizer" in e["quantizer_name"] for e in build_quant_cfg(plan)["quant_cfg"])
    plan.kv_format = "fp8"
    cfg = build_quant_cfg(plan)["quant_cfg"]
    assert cfg[-len(mtq.FP8_KV_CFG["quant_cfg"]):] == mtq.FP8_KV_CFG["quant_cfg"]
    assert kv_cache_entries("nvfp4") == mtq.NVFP4_KV_CFG["quant_cfg"] and kv_cache_entries("bf16") == []
    with pytest.raises(InputError, match="no ModelOpt KV-cache preset"):
        kv_cache_entries("int8")


def test_nvfp4_kv_cache_refused_without_cuda():
    from trtq.errors import UnsupportedError
    from trtq.quantize.apply import check_runnable_here

    plan = tiny_plan()
    plan.kv_format = "nvfp4"
    with pytest.raises(UnsupportedError, match="KV cache is nvfp4, which ModelOpt quantizes only on a CUDA GPU"):
        check_runnable_here(plan, cuda_available=False)
    check_runnable_here(plan, cuda_available=True)


def test_fp8_kv_cache_is_calibrated_and_exported_on_a_tiny_llama(tmp_path):
    """ModelOpt's FP8 KV preset on the planned model: K and V quantizers calibrated (per-tensor amax),
    the outputs change, the planned layers keep their own calibration, and the unified HF export
    records kv_cache_quant_algo FP8."""
    import json

    import torch

    from trtq.quantize.apply import _export_hf, kv_cache_quantizers, quantize_model

    batches = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    plain, kv = tiny_llama(), tiny_llama()
    plan = tiny_plan()
    quantize_model(plain, plan, batches)
    plan.kv_format = "fp8"
    quantize_model(kv, plan, batches)
    names = kv_cache_quantizers(kv)
    layers = len([n for n, _ in kv.named_modules() if n.endswith("self_attn")])
    assert len(names) == 2 * layers and not kv_cache_quantizers(plain)
    modules = dict(kv.named_modules())
    for name in names:
        q = modules[name]
        assert q.num_bits == (4, 3) and q.amax is not None and q.amax.numel() == 1 and float(q.amax) > 0, name
    plain_modules = dict(plain.named_modules())
    for layer in plan.layer_formats():
        a, b = plain_modules[layer].input_quantizer, modules[layer].input_quantizer
        if a.is_enabled and a.amax is not None:
            assert torch.equal(a.amax, b.amax), layer   # the KV pass left the layers' calibration alone
    with torch.no_grad():
        assert not torch.equal(plain(batches[:1]).logits, kv(batches[:1]).logits)
    kv.config.architectures = ["LlamaForCausalLM"]
    _export_hf(kv, None, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "hf_quant_config.json").read_text())
    assert config["quantization"]["kv_cache_quant_algo"] == "FP8"
