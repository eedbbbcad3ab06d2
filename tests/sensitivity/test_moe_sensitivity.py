"""Hessian and Fisher sensitivity of fused MoE experts (transformers 5's [experts, out, in] parameters)."""

import math

import pytest
import torch

from trtq.model.layers import build_layer_graph
from trtq.model.zoo import ResolvedModel
from trtq.registry import FORMATS
from trtq.sensitivity.experts import traced_experts
from trtq.sensitivity.fisher import fisher_scores
from trtq.sensitivity.hessian import LayerTrace, hessian_rows, hutchinson_traces, model_traces
from trtq.sensitivity.operands import kernel_inputs, kernel_weight

TINY_MIXTRAL = dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=64, intermediate_size=96,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                    num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
FORMAT_NAMES = ("fp8", "int8_sq", "int4_awq")


def random_model(config):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    data = dict(config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_moe():
    model = random_model(TINY_MIXTRAL)
    graph = build_layer_graph(ResolvedModel("tiny-mixtral", dict(TINY_MIXTRAL), "test"))
    batches = torch.randint(0, 96, (3, 32), generator=torch.Generator().manual_seed(1))
    return model, graph, batches


def expert_layers(graph):
    return [layer for layer in graph.layers if layer.experts]


def test_traced_experts_compute_what_the_module_computes(tiny_moe):
    model, graph, batches = tiny_moe
    ids = batches[:1]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with traced_experts(dict(model.named_modules()), graph):
            traced = model(input_ids=ids).logits
        restored = model(input_ids=ids).logits
    assert torch.allclose(traced, plain, atol=1e-5) and torch.equal(restored, plain)
    assert not any("forward" in vars(m) for m in model.modules())   # the class's forward is back


def test_expert_channels_count_the_tokens_routed_to_each_expert():
    # loss = sum(c * x^2) over an [experts, tokens, channels] input whose unrouted positions nothing reads
    # (c = 0 there): H = diag(2c), and an (expert, channel)'s mean trace is 2c averaged over its routed tokens.
    routed = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.float64)          # expert 0: 2 tokens, expert 1: 1
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    c = torch.rand(2, 3, 2, dtype=torch.float64) * routed[..., None]
    run = hutchinson_traces(lambda _: (c * x**2).sum(), {"x": x}, [None], max_iterations=3, min_iterations=3,
                            experts={"x": 2})
    stats = run.traces["x"]
    # without routed counts every position counts: channels are (expert, channel) pairs over all 3 tokens
    assert stats.channel_mean_traces.tolist() == pytest.approx((2 * c).sum(dim=1).flatten().div(3).tolist(), rel=1e-12)
    # with the routed counts given, the same sums are divided by the tokens each expert saw
    manual = LayerTrace(numel=x.numel(), experts=2)
    for _ in range(3):
        v = torch.randint(0, 2, x.shape, dtype=torch.float64) * 2 - 1
        manual.add_probe(v, 2 * c * v, rows=routed.sum(dim=1))
    assert manual.channel_mean_traces.tolist() == pytest.approx(
        (2 * c).sum(dim=1).div(routed.sum(dim=1, keepdim=True)).flatten().tolist(), rel=1e-12)
    assert manual.mean_trace == pytest.approx(float((2 * c).sum()) / 6, rel=1e-12)


def test_hessian_scores_every_expert_layer(tiny_moe):
    model, graph, batches = tiny_moe
    formats = [FORMATS[f] for f in FORMAT_NAMES]
    traces = model_traces(model, graph, batches, max_iterations=3, seed=0)
    rows = hessian_rows(model, graph, formats, traces, batches)
    experts = expert_layers(graph)
    assert len(experts) == 2 * TINY_MIXTRAL["num_hidden_layers"]
    k, tokens = TINY_MIXTRAL["num_experts_per_tok"], batches.shape[1]
    for layer in experts:
        weight, inputs = traces.weights[layer.name], traces.inputs[layer.name]
        assert weight.numel == layer.experts * layer.out_features * layer.in_features
        assert weight.channel_sums.numel() == layer.experts * layer.in_features
        # every token goes to k experts: the input channels' element counts add up to k x tokens per probe
        assert float(inputs.channel_rows.sum()) == pytest.approx(inputs.iterations * k * tokens * layer.in_features)
        scored = [r for r in rows if r.layer == layer.name]
        assert {r.format for r in scored} == {f.name for f in formats if f.available_for(layer.in_features)}
        for row in scored:
            assert math.isfinite(row.omega) and row.omega > 0, (row.layer, row.format)
            assert row.weight_error > 0 and row.input_error >= 0
        by_format = {r.format: r for r in scored}
        assert by_format["fp8"].input_error > 0   # FP8 quantizes the experts' inputs too


def test_fisher_down_projection_sums_each_experts_routed_output_error(tiny_moe):
    """Omega of experts.down_proj = 1/2 sum over experts and their tokens of (r dL/dout)^2 dY^2, computed here
    from the real module (its own forward) and a backward hook on its output."""
    model, graph, batches = tiny_moe
    fp8 = FORMATS["fp8"]
    scorer = fisher_scores(model, graph, [fp8], batches)
    scores, weight_errors = scorer.scores, scorer.weight_errors
    name = expert_layers(graph)[-1].name           # ...layers.1.mlp.experts.down_proj
    parent = dict(model.named_modules())[name.rsplit(".", 1)[0]]
    captured = {}
    handles = [parent.register_forward_hook(lambda m, i, o: captured.update(inputs=[t.detach() for t in i])),
               parent.register_full_backward_hook(lambda m, gi, go: captured.update(grad=go[0].detach()))]
    expected = 0.0
    try:
        for ids in batches:
            embeddings = model.get_input_embeddings()(ids.reshape(1, -1)).detach().requires_grad_(True)
            model(inputs_embeds=embeddings, labels=ids.reshape(1, -1)).loss.backward()
            hidden, top_k_index, top_k_weights = captured["inputs"]
            with torch.no_grad():
                for e in range(parent.down_proj.shape[0]):
                    tokens, positions = torch.where(top_k_index == e)
                    gate, up = (hidden[tokens] @ parent.gate_up_proj[e].t()).chunk(2, dim=-1)
                    h = parent.act_fn(gate) * up
                    w = parent.down_proj[e]
                    dy = kernel_inputs(h, fp8, None) @ kernel_weight(w, fp8, None).t() - h @ w.t()
                    grad = captured["grad"][tokens] * top_k_weights[tokens, positions, None]
                    expected += 0.5 * float((grad.pow(2) * dy.pow(2)).sum())
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    assert expected > 0 and scores[name, "fp8"] == pytest.approx(expected, rel=1e-4)
    assert weight_errors[name, "fp8"] > 0


@pytest.mark.slow   # runs `trtq sensitivity`, whose load_pretrained the test run counts (a tiny model here)
def test_cli_hessian_and_fisher_give_every_expert_layer_a_finite_omega(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trtq.artifacts import load_artifact
    from trtq.artifacts.sensitivity import Sensitivity
    from trtq.cli import main
    from trtq.data import calibration_text

    # A word-piece-free BPE the size of the tiny model's vocabulary, trained on the shipped calibration text.
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator([calibration_text()[:20000]],
                            trainers.BpeTrainer(vocab_size=96, special_tokens=["<unk>"], limit_alphabet=60))
    directory = tmp_path / "tiny-mixtral"
    random_model(TINY_MIXTRAL).save_pretrained(directory, safe_serialization=True)
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>").save_pretrained(directory)
    graph = build_layer_graph(ResolvedModel("tiny", dict(TINY_MIXTRAL), "test"))
    for method, extra in (("hessian", ["--max-iterations", "2"]), ("fisher", [])):
        out = tmp_path / f"{method}.json"
        code = main(["sensitivity", str(directory), "--method", method, "--samples", "2", "--seq-len", "32",
                     "--formats", ",".join(FORMAT_NAMES), *extra, "-o", str(out)])
        assert code == 0, capsys.readouterr().err
        rows = {(r.layer, r.format): r.omega for r in load_artifact(out, Sensitivity).rows}
        for layer in expert_layers(graph):
            assert (layer.name, "fp8") in rows and (layer.name, "int8_sq") in rows, (method, layer.name)
            for fmt in FORMAT_NAMES:
                omega = rows.get((layer.name, fmt))
                assert omega is None or (math.isfinite(omega) and omega >= 0), (method, layer.name, fmt)
            assert rows[layer.name, "fp8"] > 0, (method, layer.name)
