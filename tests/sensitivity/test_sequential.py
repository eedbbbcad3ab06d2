"""Block-sequential sensitivity (layer output, Fisher, Hessian): equal to the whole-model computation, resumable,
MoE experts scored."""

import json

import pytest
import torch

from trtq.errors import InputError
from trtq.model.layers import build_layer_graph
from trtq.model.zoo import resolve_model
from trtq.registry import FORMATS
from trtq.sensitivity.operands import kernel_inputs, kernel_weight
from trtq.sensitivity.output import output_rows
from trtq.sensitivity.fisher import fisher_scores
from trtq.sensitivity.sequential import STATE_FILE, sequential_fisher_rows, sequential_output_rows

FORMAT_NAMES = ("bf16", "fp8", "int8_sq", "int4_awq")
TINY_LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                  max_position_embeddings=64, tie_word_embeddings=False)
TINY_MIXTRAL = dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=64, intermediate_size=96,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                    num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)


def saved_model(directory, config):
    """A seeded random model of `config`, saved as safetensors; (model, resolved, graph)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    data = dict(config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    resolved = resolve_model(str(directory))
    return model, resolved, build_layer_graph(resolved)


def _saved(tmp_path_factory, config):
    directory = tmp_path_factory.mktemp(config["model_type"]) / "model"
    model, resolved, graph = saved_model(directory, config)
    batches = torch.randint(0, 96, (3, 32), generator=torch.Generator().manual_seed(1))
    return model, resolved, graph, batches


@pytest.fixture(params=[TINY_LLAMA, TINY_MIXTRAL], ids=["llama", "mixtral"], scope="module")
def tiny_saved(request, tmp_path_factory):
    return _saved(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def tiny_mixtral(tmp_path_factory):
    return _saved(tmp_path_factory, TINY_MIXTRAL)


def omegas(rows):
    return {(r.layer, r.format): (r.omega, r.weight_error) for r in rows}


def run_sequential(resolved, graph, batches, directory, **kwargs):
    formats = [FORMATS[f] for f in FORMAT_NAMES]
    return sequential_output_rows(resolved, graph, formats, batches, checkpoint_dir=directory,
                                  settings={"formats": list(FORMAT_NAMES)}, **kwargs)


def test_sequential_equals_whole_model(tiny_saved, tmp_path):
    model, resolved, graph, batches = tiny_saved
    whole = omegas(output_rows(model, graph, [FORMATS[f] for f in FORMAT_NAMES], batches))
    run = run_sequential(resolved, graph, batches, tmp_path / "ckpt")
    blockwise = omegas(run.rows)
    assert blockwise.keys() == whole.keys() and run.resumed_from == 0
    for key, (omega, weight_error) in whole.items():
        assert blockwise[key][0] == pytest.approx(omega, rel=1e-4, abs=1e-9), key
        assert blockwise[key][1] == pytest.approx(weight_error, rel=1e-6), key
    # coarser formats cost more on every layer where both fit; experts are scored when the model has them
    compared = [layer for layer in graph.layers if (layer.name, "int4_awq") in whole]
    assert compared
    for layer in compared:
        assert whole[layer.name, "fp8"][0] < whole[layer.name, "int4_awq"][0], layer.name
    for layer in graph.layers:
        assert whole[layer.name, "fp8"][0] > 0, layer.name


def test_expert_rows_sum_per_expert_output_errors(tiny_mixtral):
    """MoE: the down projection's Omega is the sum over experts of 1/2 ||dY||^2 on the tokens routed to each."""
    model, resolved, graph, batches = tiny_mixtral
    experts = [layer for layer in graph.layers if layer.experts]
    assert len(experts) == 2 * TINY_MIXTRAL["num_hidden_layers"]
    name = experts[-1].name           # ...mlp.experts.down_proj of the last block
    parent = dict(model.named_modules())[name.rsplit(".", 1)[0]]
    captured = []
    handle = parent.register_forward_hook(lambda m, i, o: captured.append((i[0].detach(), i[1])))
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids.reshape(1, -1))
    handle.remove()
    fp8 = FORMATS["fp8"]
    expected = 0.0
    for hidden, index in captured:
        for e in range(parent.gate_up_proj.shape[0]):
            tokens = (index == e).any(dim=-1)
            gate, up = (hidden[tokens] @ parent.gate_up_proj[e].t()).chunk(2, dim=-1)
            h = parent.act_fn(gate) * up
            w = parent.down_proj[e].detach()
            dy = kernel_inputs(h, fp8, None) @ kernel_weight(w, fp8, None).t() - h @ w.t()
            expected += 0.5 * float(dy.pow(2).sum())
    rows = omegas(output_rows(model, graph, [fp8], batches))
    assert expected > 0 and rows[name, "fp8"][0] == pytest.approx(expected, rel=1e-4)


def test_a_run_stopped_between_blocks_resumes_to_the_same_table(tiny_saved, tmp_path):
    _, resolved, graph, batches = tiny_saved
    full = omegas(run_sequential(resolved, graph, batches, tmp_path / "full").rows)

    class Stop(Exception):
        pass

    def stop_after_first(done, total, resumed):
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        run_sequential(resolved, graph, batches, tmp_path / "partial", progress=stop_after_first)
    assert json.loads((tmp_path / "partial" / STATE_FILE).read_text())["next_block"] == 1
    resumed = run_sequential(resolved, graph, batches, tmp_path / "partial")
    assert resumed.resumed_from == 1
    assert omegas(resumed.rows) == full
    with pytest.raises(InputError, match="other settings"):
        run_sequential(resolved, graph, batches[:2], tmp_path / "partial")



def test_sequential_is_refused_for_autoquantize(tmp_path, capsys):
    from trtq.cli import main

    code = main(["sensitivity", "smollm2-135m", "--method", "autoquantize", "--sequential",
                 "-o", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--sequential applies to --method output, weight, fisher or hessian, not autoquantize" in err[0]
    assert not (tmp_path / "s.json").exists()


def test_bfloat16_on_cpu_stays_close_to_float32(tiny_mixtral, tmp_path):
    """--dtype bfloat16 on the CPU: the same table within bf16 rounding, block-sequential and whole-model alike."""
    model, resolved, graph, batches = tiny_mixtral
    formats = [FORMATS[f] for f in ("fp8", "int8_sq", "int4_awq")]
    reference = omegas(output_rows(model, graph, formats, batches))
    half = omegas(sequential_output_rows(resolved, graph, formats, batches, checkpoint_dir=tmp_path / "bf16",
                                         settings={}, dtype="bfloat16").rows)
    assert half.keys() == reference.keys()
    for fmt in ("fp8", "int8_sq"):
        total = sum(v[0] for k, v in reference.items() if k[1] == fmt)
        assert sum(v[0] for k, v in half.items() if k[1] == fmt) == pytest.approx(total, rel=0.1), fmt
    for key, (omega, _) in reference.items():
        assert half[key][0] == pytest.approx(omega, rel=0.5), key


def test_streamed_weight_sensitivity_equals_the_loaded_model(tiny_saved):
    """--method weight --sequential reads each weight from the safetensors (fused experts assembled)
    and builds no model: the same table as the loaded model's, row for row."""
    from trtq.sensitivity.api import weight_sensitivity
    from trtq.sensitivity.sequential import streamed_weight_rows
    from trtq.sensitivity.weight import weight_rows

    model, resolved, graph, _ = tiny_saved
    formats = [FORMATS[f] for f in FORMAT_NAMES]
    with torch.no_grad():
        loaded = omegas(weight_rows(model, graph, formats))
    streamed = omegas(streamed_weight_rows(resolved, graph, formats))
    assert streamed.keys() == loaded.keys() and len(streamed) > len(graph.layers)
    for key, value in loaded.items():
        assert streamed[key] == pytest.approx(value, rel=1e-6), key
    table = weight_sensitivity(str(resolved.weights), ",".join(FORMAT_NAMES), sequential=True)
    assert table.settings["sequential"] is True and omegas(table.rows) == streamed


def test_streamed_weight_sensitivity_refuses_a_loaded_model_and_lm_head(tiny_saved):
    from trtq.sensitivity.api import weight_sensitivity

    model, resolved, graph, _ = tiny_saved
    with pytest.raises(InputError, match="reads the weights itself"):
        weight_sensitivity(str(resolved.weights), "fp8", model=model, sequential=True)
    with pytest.raises(InputError, match="drop --include-lm-head"):
        weight_sensitivity(str(resolved.weights), "fp8", include_lm_head=True, sequential=True)


def run_sequential_fisher(resolved, graph, batches, directory, **kwargs):
    formats = [FORMATS[f] for f in FORMAT_NAMES]
    return sequential_fisher_rows(resolved, graph, formats, batches, checkpoint_dir=directory,
                                  settings={"formats": list(FORMAT_NAMES)}, **kwargs)


def test_sequential_fisher_is_the_whole_model_fisher(tiny_saved, tmp_path):
    """Backpropagated block by block, the scores are the whole model's, not a block-local approximation."""
    model, resolved, graph, batches = tiny_saved
    whole = omegas(fisher_scores(model, graph, [FORMATS[f] for f in FORMAT_NAMES], batches).rows())
    run = run_sequential_fisher(resolved, graph, batches, tmp_path / "ckpt")
    blockwise = omegas(run.rows)
    assert blockwise.keys() == whole.keys() and run.resumed_from == 0
    for key, (omega, weight_error) in whole.items():
        assert omega > 0, key
        assert blockwise[key][0] == pytest.approx(omega, rel=1e-3), key
        assert blockwise[key][1] == pytest.approx(weight_error, rel=1e-6), key
    # the layer-wise objective is a different ranking: the gradient weights the layers' output errors
    local = omegas(run_sequential(resolved, graph, batches, tmp_path / "output").rows)
    ratios = {key: blockwise[key][0] / local[key][0] for key in local if local[key][0] > 0}
    assert max(ratios.values()) > 2 * min(ratios.values())


def test_tied_embeddings_head_is_the_models_own(tmp_path):
    """A model whose lm_head is its input embeddings: the head pass ties them as the model does."""
    model, resolved, graph = saved_model(tmp_path / "model", dict(TINY_LLAMA, tie_word_embeddings=True))
    assert not any("lm_head" in name for name in resolved_files(tmp_path / "model"))
    batches = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(2))
    whole = omegas(fisher_scores(model, graph, [FORMATS["fp8"]], batches).rows())
    blockwise = omegas(sequential_fisher_rows(resolved, graph, [FORMATS["fp8"]], batches,
                                              checkpoint_dir=tmp_path / "ckpt", settings={}).rows)
    for key, (omega, _) in whole.items():
        assert blockwise[key][0] == pytest.approx(omega, rel=1e-3), key


def resolved_files(directory):
    from trtq.sensitivity.sequential import TensorIndex

    return TensorIndex(directory).files


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_sequential_fisher_resumes_to_the_same_table(tiny_saved, tmp_path, phase):
    _, resolved, graph, batches = tiny_saved
    full = omegas(run_sequential_fisher(resolved, graph, batches, tmp_path / "full").rows)
    steps = 2 * len({layer.block for layer in graph.layers})
    stop_at = 1 if phase == "forward" else steps - 1   # after the first block's forward / before the last backward

    class Stop(Exception):
        pass

    def stop(done, total, resumed):
        assert total == steps
        if done == stop_at:
            raise Stop

    with pytest.raises(Stop):
        run_sequential_fisher(resolved, graph, batches, tmp_path / "partial", progress=stop)
    assert json.loads((tmp_path / "partial" / STATE_FILE).read_text())["steps"] == stop_at
    seen = []
    resumed = run_sequential_fisher(resolved, graph, batches, tmp_path / "partial",
                                    progress=lambda *a: seen.append(a))
    assert resumed.resumed_from == stop_at and seen[0] == (stop_at + 1, steps, True)
    assert omegas(resumed.rows) == full
    # what is left once done: the committed state, the last gradient and rows (removed with the directory)
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "gradient-00000.safetensors", "rows-00000.json", STATE_FILE]


def test_sequential_hessian_is_the_whole_model_hessian(tiny_saved):
    """The R-operator block by block gives the Hessian-vector products of double back-propagation through the
    loaded model: with the same probes, the same traces, per channel, and the same rows."""
    from trtq.sensitivity.hessian import hessian_rows, model_traces
    from trtq.sensitivity.sequential_hessian import sequential_hessian

    model, resolved, graph, batches = tiny_saved
    formats = [FORMATS[f] for f in ("fp8", "int8_sq", "int4_awq")]
    options = dict(tolerance=0.05, max_iterations=4, seed=3)
    traces, rows, resumed = sequential_hessian(resolved, graph, formats, batches, **options)
    assert resumed == 0
    whole = model_traces(model, graph, batches, **options)
    assert traces.iterations == whole.iterations == 4
    for kind in ("weights", "inputs"):
        mine, theirs = getattr(traces, kind), getattr(whole, kind)
        assert mine.keys() == theirs.keys() == {layer.name for layer in graph.layers}
        for name, stats in theirs.items():
            assert mine[name].samples == pytest.approx(stats.samples, rel=1e-4, abs=1e-9), (kind, name)
            scale = float(stats.channel_sums.abs().max())      # channels' sums cancel to near zero: float rounding
            assert torch.allclose(mine[name].channel_sums, stats.channel_sums, rtol=1e-4, atol=1e-5 * scale), name
    expected = {(r.layer, r.format): r for r in hessian_rows(model, graph, formats, whole, batches)}
    assert len(rows) == len(expected)
    for row in rows:
        reference = expected[row.layer, row.format]
        assert row.omega == pytest.approx(reference.omega, rel=1e-4), (row.layer, row.format)
        assert row.weight_error == pytest.approx(reference.weight_error, rel=1e-5)   # SmoothQuant: input maxima
        assert row.input_error == pytest.approx(reference.input_error, rel=1e-4)


def test_sequential_hessian_resumes_after_the_last_finished_probe(tiny_saved, tmp_path):
    from trtq.sensitivity.sequential_hessian import sequential_hessian

    _, resolved, graph, batches = tiny_saved
    formats = [FORMATS[f] for f in ("fp8", "int4_awq")]
    options = dict(tolerance=0.05, max_iterations=5, seed=1, settings={"formats": ["fp8", "int4_awq"]})
    _, full, _ = sequential_hessian(resolved, graph, formats, batches, checkpoint_dir=tmp_path / "full", **options)

    class Stop(Exception):
        pass

    def stop_after_second(iteration, remaining, total):
        if iteration == 2:
            raise Stop

    with pytest.raises(Stop):
        sequential_hessian(resolved, graph, formats, batches, checkpoint_dir=tmp_path / "partial",
                           progress=stop_after_second, **options)
    assert json.loads((tmp_path / "partial" / STATE_FILE).read_text())["probes"] == 2
    probes = []
    traces, rows, resumed = sequential_hessian(resolved, graph, formats, batches, checkpoint_dir=tmp_path / "partial",
                                               progress=lambda i, r, t: probes.append(i), **options)
    assert resumed == 2 and probes[0] == 3 and traces.iterations == 5
    assert [(r.layer, r.format, r.omega) for r in rows] == [(r.layer, r.format, r.omega) for r in full]
    with pytest.raises(InputError, match="other settings"):
        sequential_hessian(resolved, graph, formats, batches, checkpoint_dir=tmp_path / "partial",
                           **{**options, "max_iterations": 6})
