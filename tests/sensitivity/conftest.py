"""A tiny random Llama: the sensitivity methods' plumbing, checked by hand where the real model is too big."""

import pytest
import torch

from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ResolvedModel

TINY = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
            max_position_embeddings=64, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = dict(TINY)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    model.eval()
    graph = build_layer_graph(ResolvedModel("tiny", dict(TINY), "test"))
    batches = torch.randint(0, 96, (3, 32), generator=torch.Generator().manual_seed(1))
    return model, graph, batches
