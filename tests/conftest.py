"""Session fixtures shared across stages: the real model is loaded once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_resolved():
    from trtq.model.zoo import require_embedded_model

    return require_embedded_model()


@pytest.fixture(scope="session")
def smollm2_graph(smollm2_resolved):
    from trtq.model.layers import build_layer_graph

    return build_layer_graph(smollm2_resolved)


@pytest.fixture(scope="session")
def smollm2_model(smollm2_resolved):
    """(model, tokenizer): the real SmolLM2-135M in float32. Treat as read-only."""
    import torch

    from trtq.model.zoo import load_pretrained

    torch.manual_seed(0)
    return load_pretrained(smollm2_resolved)


@pytest.fixture(scope="session")
def smollm2_weight_sensitivity(smollm2_model):
    from trtq.sensitivity.api import weight_sensitivity

    return weight_sensitivity("smollm2-135m", model=smollm2_model[0])


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")
