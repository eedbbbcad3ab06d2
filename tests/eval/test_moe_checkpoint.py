"""`trtq eval` of an MoE checkpoint: ModelOpt exports fused experts per expert (Mixtral:
block_sparse_moe.experts.E.w1/w3/w2, the router as block_sparse_moe.gate), each with its own scales;
the rebuilt model computes every expert's GEMMs from those tensors and routes as transformers does."""

import copy

import pytest
import torch

from tests.helpers.plans import plan_from_graph
from tests.quantize.test_moe_quantize import EXPERTS, TINY_MIXTRAL, experts_fp8_in_block_0
from trtq.eval import checkpoint as ckpt
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ResolvedModel


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    from trtq.quantize.apply import export_checkpoint, quantize_model

    torch.manual_seed(0)
    data = dict(TINY_MIXTRAL)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data)).eval()
    graph = build_layer_graph(ResolvedModel("tiny-mixtral", dict(TINY_MIXTRAL), "test"))
    batches = torch.randint(0, 96, (4, 32), generator=torch.Generator().manual_seed(1))
    plan = plan_from_graph(graph, experts_fp8_in_block_0, model="tiny-mixtral")
    quantized = quantize_model(copy.deepcopy(model), plan, batches)
    out = export_checkpoint(quantized, None, plan, tmp_path_factory.mktemp("moe") / "ckpt", model_name="tiny-mixtral")
    loaded = ckpt.load_checkpoint_model(ckpt.open_checkpoint(out), model)
    return model, quantized, loaded, out, batches


def _fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x / scale).clamp(-448, 448).to(torch.float8_e4m3fn).to(torch.float32) * scale


def _experts_from_the_files(directory, block, hidden, top_k_index, top_k_weights, quantized):
    """The layer's routed experts computed from the checkpoint's tensors directly (the reference)."""
    from safetensors import safe_open

    with safe_open(str(directory / "hf" / "model.safetensors"), framework="pt") as handle:
        def gemm(e, leaf, x):
            key = f"model.layers.{block}.block_sparse_moe.experts.{e}.{leaf}"
            if not quantized:
                return x @ handle.get_tensor(f"{key}.weight").float().T
            weight = handle.get_tensor(f"{key}.weight").float() * handle.get_tensor(f"{key}.weight_scale").float()
            return _fp8(x, handle.get_tensor(f"{key}.input_scale").float()) @ weight.T

        out = torch.zeros_like(hidden)
        for token in range(hidden.shape[0]):
            for slot in range(top_k_index.shape[1]):
                e, x = int(top_k_index[token, slot]), hidden[token:token + 1]
                h = torch.nn.functional.silu(gemm(e, "w1", x)) * gemm(e, "w3", x)
                out[token] += top_k_weights[token, slot] * gemm(e, "w2", h)[0]
    return out


def test_moe_checkpoint_rebuilds_every_expert_from_its_exported_tensors(exported):
    model, quantized, loaded, out, batches = exported
    # block 0: 4 experts x 3 GEMMs and q/k/v/o in FP8; block 1: q/k/v FP8, o and the experts bf16
    assert loaded.layer_formats == {"fp8": EXPERTS * 3 + 4 + 3, "bf16": EXPERTS * 3 + 1}
    rebuilt, fake = dict(loaded.model.named_modules()), dict(quantized.named_modules())
    for block, is_fp8 in ((0, True), (1, False)):
        name = f"model.layers.{block}.mlp.experts"
        assert isinstance(rebuilt[name], ckpt.CheckpointExperts)
        captured = {}
        handle = fake[name].register_forward_pre_hook(lambda m, a, k: captured.update(args=a, kwargs=k),
                                                      with_kwargs=True)
        with torch.no_grad():
            quantized(input_ids=batches[:2])
        handle.remove()
        hidden, top_k_index, top_k_weights = captured["args"] if len(captured["args"]) == 3 else (
            captured["args"][0], captured["kwargs"]["top_k_index"], captured["kwargs"]["top_k_weights"])
        with torch.no_grad():
            mine = rebuilt[name](hidden, top_k_index, top_k_weights)
            theirs = fake[name](hidden, top_k_index, top_k_weights)
        reference = _experts_from_the_files(out, block, hidden, top_k_index, top_k_weights, is_fp8)
        assert torch.allclose(mine, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max())), block
        # against ModelOpt's fake quantization: bf16 experts differ by bf16 rounding of the weights; FP8
        # ones by the export's bf16 weight scale (every weight scaled by ~1e-3, some one E4M3 step apart)
        relative = float((mine - theirs).abs().max() / theirs.abs().max())
        assert relative < (0.1 if is_fp8 else 0.01), (block, relative)
    # the router is read from its checkpoint name (block_sparse_moe.gate) into the model's (mlp.gate)
    with torch.no_grad():
        assert torch.equal(loaded.model.model.layers[0].mlp.gate.weight,
                           model.model.layers[0].mlp.gate.weight.to(torch.bfloat16).float())
        logits = loaded.model(input_ids=batches[:2]).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("drop", "needle"), [
    ("model.layers.0.block_sparse_moe.experts.2.w3.weight_scale", "lacks tensor model.layers.0.block_sparse_moe.experts.2.w3.weight_scale"),
    ("model.layers.1.block_sparse_moe.experts.0.w2.weight", "lacks tensor model.layers.1.block_sparse_moe.experts.0.w2.weight"),
    ("model.layers.1.block_sparse_moe.gate.weight", "lacks tensor model.layers.1.mlp.gate.weight"),
])
def test_an_moe_checkpoint_missing_a_tensor_is_refused_naming_it(exported, tmp_path, drop, needle):
    import shutil

    from safetensors.torch import load_file, save_file

    from trtq.errors import ArtifactError

    model, _, _, out, _ = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    tensors = load_file(str(broken / "hf" / "model.safetensors"))
    del tensors[drop]
    save_file(tensors, str(broken / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ArtifactError) as refused:
        ckpt.load_checkpoint_model(ckpt.open_checkpoint(broken), model)
    assert needle in str(refused.value) and "\n" not in str(refused.value)
