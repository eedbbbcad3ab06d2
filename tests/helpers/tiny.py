"""Tiny random-weight models of the shipped families, saved as safetensors with SmolLM2's tokenizer, and plans
for them: for the block-sequential tests (quantize and eval), where a real model's depth adds nothing."""

from __future__ import annotations

from pathlib import Path

TINY_LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                  max_position_embeddings=64, tie_word_embeddings=False)
TINY_MIXTRAL = dict(TINY_LLAMA, architectures=["MixtralForCausalLM"], model_type="mixtral", num_local_experts=4,
                    num_experts_per_tok=2, intermediate_size=64)

TINY_QWEN2 = dict(TINY_LLAMA, architectures=["Qwen2ForCausalLM"], model_type="qwen2")  # q/k/v with biases
TINY_QWEN3 = dict(TINY_LLAMA, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=16)  # q/k norms
TINY_QWEN2_MOE = dict(TINY_LLAMA, architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                      decoder_sparse_step=1)  # routed experts, a shared expert and its gate


def save_tiny(path: Path, config: dict, tokenizer_dir: Path) -> Path:
    """A random model of `config` (seeded) with the tokenizer from `tokenizer_dir`, written to `path`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    data = dict(config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(path)
    return path


def assignment_for(path: Path, choose) -> dict[str, tuple[str, int | None]]:
    """layer -> (format, group size) for the model at `path`: `choose(group index, group kind)` names the format."""
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.registry import get_format

    assignment = {}
    for index, group in enumerate(build_layer_graph(resolve_model(str(path))).groups):
        fmt = get_format(choose(index, group.kind))
        assignment.update({m: (fmt.name, fmt.group_size_for(group.in_features)) for m in group.members})
    return assignment
