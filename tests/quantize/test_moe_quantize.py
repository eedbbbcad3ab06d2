"""A plan over a tiny random Mixtral: ModelOpt quantizes its fused experts per expert on the CPU, and exports.

ModelOpt 0.47 wraps transformers 5's fused experts (MixtralExperts, Qwen2/3MoeExperts) in its
_QuantFusedExperts: one weight quantizer per expert, one input quantizer shared by the experts,
calibrated by max. Its SmoothQuant and AWQ calibrate nn.Linear layers only, so an expert layer in
int8_sq / int4_awq / w4a8_awq is refused in one line.
"""

import copy
import json

import pytest
import torch

from tests.helpers.plans import plan_from_graph
from trtq.errors import UnsupportedError
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ResolvedModel

TINY_MIXTRAL = dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=64, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                    num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
EXPERTS = TINY_MIXTRAL["num_local_experts"]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    data = dict(TINY_MIXTRAL)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data)).eval()
    graph = build_layer_graph(ResolvedModel("tiny-mixtral", dict(TINY_MIXTRAL), "test"))
    batches = torch.randint(0, 96, (4, 32), generator=torch.Generator().manual_seed(1))
    return model, graph, batches


def experts_fp8_in_block_0(i, name, kind):
    """Block 0's experts and attention in FP8; block 1's experts bf16, its q/k/v FP8."""
    if kind == "moe":
        return "fp8" if ".layers.0." in name else "bf16"
    return "fp8" if kind == "qkv" or ".layers.0." in name else "bf16"


def test_experts_are_quantized_per_expert_and_exported(tiny, tmp_path):
    from safetensors import safe_open

    from trtq.artifacts import load_artifact
    from trtq.artifacts.quantize import QuantizeSummary
    from trtq.quantize.apply import export_checkpoint, quantize_model

    model, graph, batches = tiny
    plan = plan_from_graph(graph, experts_fp8_in_block_0, model="tiny-mixtral")
    assert [g.kind for g in plan.groups].count("moe") == 2
    reference = copy.deepcopy(model)
    quantized = quantize_model(copy.deepcopy(model), plan, batches)

    modules = dict(quantized.named_modules())
    on, off = modules["model.layers.0.mlp.experts"], modules["model.layers.1.mlp.experts"]
    for leaf in ("gate_up_proj", "down_proj"):
        weight_quantizers = getattr(on, f"{leaf}_weight_quantizers")
        assert len(weight_quantizers) == EXPERTS and all(q.is_enabled for q in weight_quantizers)
        amax = [float(q.amax) for q in weight_quantizers]
        # each expert calibrated on its own weights: its amax is its own slice's max |w|
        assert amax == pytest.approx([float(getattr(on, leaf)[e].detach().abs().max()) for e in range(EXPERTS)], rel=1e-6)
        assert getattr(on, f"{leaf}_input_quantizer").is_enabled
        assert float(getattr(on, f"{leaf}_input_quantizer").amax) > 0
        assert not any(q.is_enabled for q in getattr(off, f"{leaf}_weight_quantizers"))
        assert not getattr(off, f"{leaf}_input_quantizer").is_enabled
    with torch.no_grad():
        before = reference(input_ids=batches[:1]).logits
        after = quantized(input_ids=batches[:1]).logits
    assert 0 < float((after - before).abs().max()) < 0.1 * float(before.abs().max())

    out = export_checkpoint(quantized, None, plan, tmp_path / "engine", model_name="tiny-mixtral")
    quant = json.loads((out / "hf" / "hf_quant_config.json").read_text())["quantization"]
    assert quant["quant_algo"] == "FP8"
    excluded = set(quant["exclude_modules"])
    with safe_open(str(out / "hf" / "model.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
        # ModelOpt writes the checkpoint's per-expert layout (Mixtral: block_sparse_moe.experts.E.w1/w2/w3)
        for e in range(EXPERTS):
            for w in ("w1", "w2", "w3"):
                fp8 = f"model.layers.0.block_sparse_moe.experts.{e}.{w}"
                assert handle.get_tensor(f"{fp8}.weight").dtype == torch.float8_e4m3fn, fp8
                assert f"{fp8}.weight_scale" in names and f"{fp8}.input_scale" in names
                bf16 = f"model.layers.1.block_sparse_moe.experts.{e}.{w}"
                assert handle.get_tensor(f"{bf16}.weight").dtype == torch.bfloat16, bf16
                assert bf16 in excluded or f"{bf16}.weight_scale" not in names
    summary = load_artifact(out / "quantize_summary.json", QuantizeSummary)
    layers = {layer.layer: layer for layer in summary.layers}
    gate_up = layers["model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.format == "fp8" and gate_up.experts == EXPERTS
    assert len(gate_up.weight_quantizer) == EXPERTS and all(s.enabled for s in gate_up.weight_quantizer)
    assert len(gate_up.input_quantizer) == 1 and gate_up.input_quantizer[0].enabled
    assert layers["model.layers.1.mlp.experts.down_proj"].experts == EXPERTS
    assert not any(s.enabled for s in layers["model.layers.1.mlp.experts.down_proj"].weight_quantizer)


@pytest.mark.parametrize(("experts", "dense", "needles"), [
    ("int8_sq", "fp8", ["4 fused MoE expert layers in int8_sq", "(smoothquant) ModelOpt applies to nn.Linear layers "
                        "only", "re-plan the experts in fp8"]),
    # AWQ on attention alone breaks ModelOpt 0.47's export of a model with fused experts (get_experts_list)
    ("fp8", "int4_awq", ["layers in int4_awq", "model with fused MoE experts", "re-plan without int4_awq"]),
])
def test_what_modelopt_cannot_do_with_fused_experts_is_refused_in_one_line(tiny, tmp_path, capsys, experts, dense,
                                                                            needles):
    from trtq.artifacts import save_artifact
    from trtq.cli import main
    from trtq.quantize.apply import quantize_model

    model, graph, batches = tiny
    plan = plan_from_graph(graph, lambda i, name, kind: experts if kind == "moe" else dense, model="tiny-mixtral")
    pristine = copy.deepcopy(model)
    with pytest.raises(UnsupportedError) as refused:
        quantize_model(pristine, plan, batches)
    assert "\n" not in str(refused.value)
    for needle in needles:
        assert needle in str(refused.value)
    assert not any(name.endswith("_quantizer") for name, _ in pristine.named_modules())   # refused before ModelOpt

    # `trtq quantize` refuses it from the plan alone, before any model loads
    directory = tmp_path / "tiny-mixtral"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(TINY_MIXTRAL))
    save_artifact(plan, tmp_path / "plan.yaml")
    code = main(["quantize", str(directory), "--plan", str(tmp_path / "plan.yaml"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needles[0] in err[0], err
    assert not (tmp_path / "out").exists()
