"""trtq.quantize.offload's bf16 rewrite of the streaming export: one tensor at a time, the same file a
safetensors writer would give but for the float32 weights, biases and pre_quant_scales, now bf16."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trtq.quantize.offload import unquantized_tensors_to_bf16


def test_float32_weights_become_bf16_and_everything_else_is_kept_bit_for_bit(tmp_path):
    generator = torch.Generator().manual_seed(0)
    original = {
        "model.embed_tokens.weight": torch.randn(7, 5, generator=generator),
        "model.layers.0.self_attn.q_proj.weight": torch.randint(-8, 8, (6, 4), dtype=torch.int8),
        "model.layers.0.self_attn.q_proj.weight_scale": torch.rand(6, generator=generator),  # float32 by design
        "model.layers.0.self_attn.q_proj.input_scale": torch.tensor(0.25),  # 0-dim
        "model.layers.0.self_attn.q_proj.bias": torch.randn(6, generator=generator),
        "model.layers.0.mlp.down_proj.weight": torch.randn(3, 8, generator=generator).to(torch.float8_e4m3fn),
        "model.layers.0.mlp.down_proj.pre_quant_scale": torch.rand(8, generator=generator),
        "model.layers.0.mlp.up_proj.weight": torch.randn(3, 3, generator=generator).to(torch.bfloat16),
        "model.norm.weight": torch.randn(5, generator=generator),
    }
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({k: v for k, v in original.items() if "layers" not in k}, str(hf / "model-00001-of-00002.safetensors"),
              metadata={"format": "pt"})
    save_file({k: v for k, v in original.items() if "layers" in k}, str(hf / "model-00002-of-00002.safetensors"),
              metadata={"format": "pt"})
    (hf / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": {}}))
    (hf / "config.json").write_text(json.dumps({"dtype": "float32", "model_type": "llama"}))

    unquantized_tensors_to_bf16(hf)

    rewritten = {**load_file(str(hf / "model-00001-of-00002.safetensors")),
                 **load_file(str(hf / "model-00002-of-00002.safetensors"))}
    assert rewritten.keys() == original.keys()
    cast = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.mlp.down_proj.pre_quant_scale", "model.norm.weight"}
    for name, before in original.items():
        after = rewritten[name]
        if name in cast:
            assert after.dtype == torch.bfloat16 and torch.equal(after, before.to(torch.bfloat16)), name
        else:
            assert after.dtype == before.dtype and after.shape == before.shape, name
            assert torch.equal(after.view(torch.uint8) if after.dim() else after,
                               before.view(torch.uint8) if before.dim() else before), name
    data = sum(t.numel() * t.element_size() for t in rewritten.values())
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == data
    assert json.loads((hf / "config.json").read_text())["dtype"] == "bfloat16"
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "model-00001-of-00002.safetensors",
                                                    "model-00002-of-00002.safetensors", "model.safetensors.index.json"]


def test_tensors_stay_aligned_to_their_element_size(tmp_path):
    """The larger elements are written first: every tensor's offset is a multiple of its element size, as
    safetensors' own writer keeps them (a reader may map them in place)."""
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({"a.weight": torch.ones(3), "b.weight_scale": torch.ones(3), "c.weight": torch.ones(3, dtype=torch.int8),
               "d.input_scale": torch.ones((), dtype=torch.float64)}, str(hf / "model.safetensors"))
    (hf / "config.json").write_text("{}")
    unquantized_tensors_to_bf16(hf)
    with open(hf / "model.safetensors", "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    assert size % 8 == 0
    widths = {"F64": 8, "F32": 4, "BF16": 2, "I8": 1}
    for name, entry in header.items():
        if name != "__metadata__":
            assert entry["data_offsets"][0] % widths[entry["dtype"]] == 0, (name, entry)
    assert header["a.weight"]["dtype"] == "BF16" and header["b.weight_scale"]["dtype"] == "F32"
    assert load_file(str(hf / "model.safetensors"))["d.input_scale"].item() == pytest.approx(1.0)
