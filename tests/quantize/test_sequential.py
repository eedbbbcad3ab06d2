"""`trtq quantize --sequential`: decoder blocks offloaded (to disk here, no GPU), ModelOpt's layerwise
calibration and streaming export, against the whole-model path on the same plan and calibration.

The two differ by rounding only: the whole-model path exports a bf16 copy of the calibrated model (scales
from bf16 amax, weights quantized from bf16), the sequential one quantizes the float32 model and rounds
once. Bounds below are what one rounding step allows, measured on SmolLM2 with margin (worst seen:
1.0% of scales' relative change, INT8 codes one apart on 3.8% of a layer, INT4 on 0.8%, FP8 on 0.8%).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.gating import requires_gpu
from tests.helpers.tiny import TINY_LLAMA, TINY_MIXTRAL, assignment_for, save_tiny
from trtq.errors import UnsupportedError


def tensors(hf: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    found = {}
    for shard in sorted(hf.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as handle:
            found.update({name: handle.get_tensor(name) for name in handle.keys()})
    return found


def int4_codes(packed: torch.Tensor) -> torch.Tensor:
    low, high = (packed & 15).to(torch.int16), (packed >> 4).to(torch.int16)
    codes = torch.stack([low, high])
    return torch.where(codes > 7, codes - 16, codes)


def assert_same_up_to_rounding(whole: dict[str, torch.Tensor], sequential: dict[str, torch.Tensor]) -> None:
    assert set(sequential) == set(whole)
    for name, expected in whole.items():
        got = sequential[name]
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), name
        if expected.dtype in (torch.int8, torch.uint8):  # INT8 codes, or two INT4 codes per byte
            a, b = (expected.to(torch.int16), got.to(torch.int16)) if expected.dtype == torch.int8 else (
                int4_codes(expected), int4_codes(got))
            apart = (a - b).abs()
            assert apart.max() <= 1 and (apart > 0).float().mean() < 0.06, name
        elif expected.dtype == torch.float8_e4m3fn:
            differ = expected.view(torch.uint8) != got.view(torch.uint8)
            assert differ.float().mean() < 0.05, name
        else:  # bf16 weights (two roundings at most) and float32 scales
            scale = expected.float().abs().max().clamp_min(1e-30)
            assert ((expected.float() - got.float()).abs().max() / scale) < 0.02, name


def test_smollm2_sequential_export_is_the_whole_models_up_to_rounding(mixed_export, exported_sequentially):
    """Five formats over all 30 blocks (q/k/v and gate/up fused in AWQ and SmoothQuant: the fusion ModelOpt's
    streaming export could not do on offloaded weights), through the CLI with --sequential."""
    _, _, whole = mixed_export
    _, _, sequential = exported_sequentially
    read = lambda out, name: json.loads((out / "hf" / name).read_text())  # noqa: E731
    assert read(sequential, "hf_quant_config.json") == read(whole, "hf_quant_config.json")
    assert read(sequential, "config.json")["dtype"] == "bfloat16"
    assert_same_up_to_rounding(tensors(whole / "hf"), tensors(sequential / "hf"))


def test_sequential_output_says_what_it_did_and_leaves_nothing_beside(mixed_export, exported_sequentially):
    from trtq.artifacts import load_artifact
    from trtq.artifacts.quantize import QuantizeSummary

    _, _, whole = mixed_export
    plan, _, out = exported_sequentially
    summary = load_artifact(out / "quantize_summary.json", QuantizeSummary)
    assert any("one decoder block at a time" in note for note in summary.metadata.notes)
    assert summary.trtllm_checkpoint is None
    assert any("--sequential" in note and "hf/ is the checkpoint" in note for note in summary.metadata.notes)
    # the calibrated quantizers, as the whole-model run calibrated them
    reference = {row.layer: row for row in load_artifact(whole / "quantize_summary.json", QuantizeSummary).layers}
    assert [row.layer for row in summary.layers] == list(plan.layer_formats())
    for row in summary.layers:
        for got, expected in zip(row.weight_quantizer, reference[row.layer].weight_quantizer, strict=True):
            assert got.enabled == expected.enabled, row.layer
            if expected.amax is not None:
                assert got.amax["max"] == pytest.approx(expected.amax["max"], rel=1e-5), row.layer
    # the offload folder and the work directory went away
    assert sorted(p.name for p in out.parent.iterdir()) == ["mixed"]
    assert {p.name for p in out.iterdir()} == {"hf", "plan.yaml", "quantize_summary.json"}


def quantize_both_ways(path: Path, assignment, tmp: Path, device: str = "cpu", ways=(False, True), **export_options):
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.quantize.apply import export_checkpoint, quantize_model

    batches = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    outputs = []
    for sequential in ways:
        model, tokenizer = load_pretrained(resolve_model(str(path)), device=device,
                                           offload_folder=tmp / f"offload-{sequential}" if sequential else None)
        quantize_model(model, assignment, batches, layerwise=sequential)
        outputs.append(export_checkpoint(model, tokenizer, assignment, tmp / f"out-{sequential}", **export_options))
    return outputs


def test_tiny_mixtral_experts_quantize_sequentially(tmp_path, tokenizer_dir):
    """Fused MoE experts in FP8 (attention FP8 and bf16 in turn), offloaded and exported per expert."""
    path = save_tiny(tmp_path / "mixtral", TINY_MIXTRAL, tokenizer_dir)
    assignment = assignment_for(path, lambda i, kind: "fp8" if kind == "moe" or i % 2 else "bf16")
    whole, sequential = quantize_both_ways(path, assignment, tmp_path)
    written = tensors(sequential / "hf")
    for expert in range(TINY_MIXTRAL["num_local_experts"]):  # per expert, as Mixtral checkpoints name them
        assert written[f"model.layers.2.block_sparse_moe.experts.{expert}.w2.weight"].dtype == torch.float8_e4m3fn
    assert_same_up_to_rounding(tensors(whole / "hf"), written)


def test_max_shard_size_splits_both_exports_and_eval_reads_the_shards(tmp_path, tokenizer_dir):
    """--max-shard-size: files of at most that size (plus one tensor) with their index, whole model and
    sequential alike; the sharded checkpoints score as one file does, loaded and block by block."""
    from trtq.eval.checkpoint import load_checkpoint_model, open_checkpoint
    from trtq.eval.perplexity import perplexity
    from trtq.eval.sequential import sequential_checkpoint_scores
    from trtq.model.zoo import load_pretrained, resolve_model

    config = dict(TINY_LLAMA, hidden_size=256, intermediate_size=512)  # ~4 MB in bf16
    path = save_tiny(tmp_path / "llama", config, tokenizer_dir)
    assignment = assignment_for(path, lambda i, kind: ("fp8", "int4_awq", "bf16")[i % 3])
    shard = 1 << 20
    whole, sequential = quantize_both_ways(path, assignment, tmp_path, max_shard_size=shard)
    (single,) = quantize_both_ways(path, assignment, tmp_path / "one", ways=(False,))
    windows = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(2))
    reference, _ = load_pretrained(resolve_model(str(path)))
    one_file = perplexity(load_checkpoint_model(open_checkpoint(single), reference).model, windows).ppl
    for out in (whole, sequential):
        files = sorted((out / "hf").glob("*.safetensors"))
        index = json.loads((out / "hf" / "model.safetensors.index.json").read_text())
        assert len(files) >= 3 and set(index["weight_map"].values()) == {f.name for f in files}, files
        largest_tensor = max(t.numel() * t.element_size() for t in tensors(out / "hf").values())
        assert all(f.stat().st_size <= shard + largest_tensor + (64 << 10) for f in files)
        checkpoint = open_checkpoint(out)
        loaded = perplexity(load_checkpoint_model(checkpoint, reference).model, windows).ppl
        streamed = sequential_checkpoint_scores(resolve_model(str(path)), checkpoint, windows, "cpu", "float32",
                                                lambda message: None).quantized.ppl
        assert streamed == pytest.approx(loaded, rel=1e-5)
        if out == whole:
            assert loaded == pytest.approx(one_file, rel=1e-6)


def test_rewritten_blocks_go_back_to_disk_not_ram(tmp_path, tokenizer_dir):
    """SmoothQuant and AWQ rewrite each block's weights; ModelOpt 0.47 would keep each rewritten
    disk-offloaded block in the offload's RAM state dict, so a CPU run would end holding the whole model."""
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.quantize.apply import quantize_model

    path = save_tiny(tmp_path / "llama", TINY_LLAMA, tokenizer_dir)
    assignment = assignment_for(path, lambda i, kind: ("int8_sq", "int4_awq", "fp8")[i % 3])
    offload = tmp_path / "offload"
    model, _ = load_pretrained(resolve_model(str(path)), offload_folder=offload)
    loader = model.model.layers[0].self_attn.q_proj._hf_hook.weights_map.dataset
    assert not loader.state_dict and all("safetensors_file" in entry for entry in loader.index.values())
    quantize_model(model, assignment, torch.randint(0, 96, (4, 16)), layerwise=True)
    assert not loader.state_dict
    rewritten = sorted(key for key, entry in loader.index.items() if "safetensors_file" not in entry)
    assert "model.layers.0.self_attn.q_proj.weight" in rewritten  # SmoothQuant folds its scale into the weight
    assert all((offload / f"{key}.dat").is_file() for key in rewritten)


def test_block_offload_map_covers_every_parameter_once(tmp_path, tokenizer_dir):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from trtq.model.zoo import block_offload_map

    path = save_tiny(tmp_path / "llama", TINY_LLAMA, tokenizer_dir)
    device_map = block_offload_map(path, "cuda:0", "cpu")
    assert {k for k, v in device_map.items() if v == "cpu"} == {f"model.layers.{b}" for b in range(3)}
    assert {"model.embed_tokens", "model.norm", "lm_head"} <= {k for k, v in device_map.items() if v == "cuda:0"}
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    for name, _ in skeleton.named_parameters():
        owners = [k for k in device_map if name == k or name.startswith(k + ".")]
        assert len(owners) == 1, name


def test_an_architecture_without_blocks_is_refused_in_one_line(tmp_path):
    from transformers import GPT2Config

    from trtq.model.zoo import block_offload_map

    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedError, match="no family adapter.*drop --sequential"):
        block_offload_map(tmp_path, "cpu", "disk")


def test_layerwise_stages_say_which_ones_rewrite_weights():
    from trtq.quantize.apply import _stage_algorithm

    assert _stage_algorithm("max", False) == "max"
    assert _stage_algorithm("max", True) == {"method": "max",
                                            "layerwise": {"enable": True, "calib_mutates_weights": False}}
    awq = {"method": "awq_lite", "alpha_step": 0.1}
    staged = _stage_algorithm(awq, True)
    assert staged["layerwise"] == {"enable": True, "calib_mutates_weights": True} and "layerwise" not in awq


@requires_gpu
def test_sequential_on_cuda_holds_one_block_on_the_gpu(tmp_path, tokenizer_dir):
    """Blocks in host RAM, one on the GPU at a time; the export equal to the whole-model one up to rounding."""
    path = save_tiny(tmp_path / "llama", TINY_LLAMA, tokenizer_dir)
    assignment = assignment_for(path, lambda i, kind: ("fp8", "int4_awq", "bf16")[i % 3])
    whole, sequential = quantize_both_ways(path, assignment, tmp_path, device="cuda")
    assert_same_up_to_rounding(tensors(whole / "hf"), tensors(sequential / "hf"))
