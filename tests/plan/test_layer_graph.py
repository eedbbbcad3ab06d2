"""`trtq plan`'s torch-free layer graph is the graph transformers builds on the meta device."""

import pytest

from trtq.errors import InputError
from trtq.model.families import config_layer_graph
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ZOO, ResolvedModel, resolve_model


@pytest.mark.parametrize("include_lm_head", [False, True])
@pytest.mark.parametrize("alias", list(ZOO))
def test_config_graph_equals_the_meta_device_graph(alias, include_lm_head):
    resolved = resolve_model(alias)
    from_config = config_layer_graph(resolved, include_lm_head=include_lm_head)
    from_torch = build_layer_graph(resolved, include_lm_head=include_lm_head)
    assert from_config is not None
    assert from_config.model_dump(exclude={"metadata"}) == from_torch.model_dump(exclude={"metadata"})


def test_variants_of_a_family_config_match_transformers():
    """Attention and MLP biases, an explicit head_dim, no num_key_value_heads, tied embeddings."""
    base = dict(resolve_model("smollm2-135m").config, num_hidden_layers=2)
    for change in ({"attention_bias": True, "mlp_bias": True}, {"head_dim": 32}, {"tie_word_embeddings": False},
                   {"num_key_value_heads": None}):
        config = {**base, **change}
        if config["num_key_value_heads"] is None:
            del config["num_key_value_heads"]
        resolved = ResolvedModel("variant", config, "test")
        assert (config_layer_graph(resolved).model_dump(exclude={"metadata"})
                == build_layer_graph(resolved).model_dump(exclude={"metadata"})), change


def test_other_families_fall_back_and_bad_numbers_are_refused():
    resolved = resolve_model("smollm2-135m")
    assert config_layer_graph(ResolvedModel("x", dict(resolved.config, model_type="gpt2"), "test")) is None
    for key, value in (("num_hidden_layers", 1e9), ("num_hidden_layers", 10**9), ("hidden_size", 0),
                       ("vocab_size", "many")):
        with pytest.raises(InputError, match=f"config {key} must be a whole number"):
            config_layer_graph(ResolvedModel("x", dict(resolved.config, **{key: value}), "test"))
