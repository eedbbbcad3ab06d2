"""`trtq eval --sequential`: the reference and the checkpoint (or the plan's fake-quantized model) scored one
decoder block at a time give the loaded path's perplexities, hold one block at a time, and refuse what they
cannot do."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch

from tests.conftest import MIXED_CALIBRATION
from tests.eval.conftest import FAST_EVAL
from tests.gating import requires_gpu
from tests.helpers.checkpoints import copy_checkpoint, edit_json, rewrite_weights
from tests.helpers.tiny import (
    TINY_LLAMA,
    TINY_MIXTRAL,
    TINY_QWEN2,
    TINY_QWEN2_MOE,
    TINY_QWEN3,
    assignment_for,
    save_tiny,
)
from trtq.artifacts import load_artifact
from trtq.artifacts.eval import EvalResult
from trtq.cli import main
from trtq.errors import UnsupportedError


def test_smollm2_checkpoint_scores_block_by_block_as_loaded(mixed_export, tmp_path, capsys):
    """Through the CLI, the shared five-format export: the same artifact but for the notes, perplexities
    equal to float32 rounding (the model's own loss per window against the summed cross-entropy)."""
    _, _, out = mixed_export
    loaded, streamed = tmp_path / "loaded.json", tmp_path / "streamed.json"
    assert main(["eval", "smollm2-135m", "--checkpoint", str(out), *FAST_EVAL, "-o", str(loaded)]) == 0
    capsys.readouterr()
    assert main(["eval", "smollm2-135m", "--checkpoint", str(out), "--sequential", *FAST_EVAL,
                 "-o", str(streamed)]) == 0
    err = capsys.readouterr().err
    assert "one decoder block at a time" in err and "loaded smollm2-135m" not in err, err
    a, b = load_artifact(loaded, EvalResult), load_artifact(streamed, EvalResult)
    with capsys.disabled():
        print(f"\nperplexity, loaded vs block by block: reference {a.ppl_bf16:.6f} / {b.ppl_bf16:.6f}, "
              f"checkpoint {a.ppl_quant:.6f} / {b.ppl_quant:.6f}")
    assert b.ppl_bf16 == pytest.approx(a.ppl_bf16, rel=1e-5)
    assert b.ppl_quant == pytest.approx(a.ppl_quant, rel=1e-5)
    assert b.ppl_quant != b.ppl_bf16
    assert (b.windows, b.tokens, b.layer_formats, b.passed) == (a.windows, a.tokens, a.layer_formats, a.passed)
    assert b.metadata.inputs == a.metadata.inputs and b.plan_sha256 == a.plan_sha256
    assert any("block-sequential" in note and "30 decoder blocks" in note for note in b.metadata.notes)
    assert any("AWQ layers carry no pre_quant_scale" in note for note in b.metadata.notes)


def test_smollm2_plan_scores_block_by_block_as_loaded(mixed_plan, plan_eval, tmp_path, capsys):
    """`--plan --sequential`: the blocks offloaded to disk, the reference scored through the offload hooks, the
    model calibrated layerwise in place; the loaded path's reference exactly (the same arithmetic), its quantized
    perplexity up to layerwise calibration's rounding, and no offload folder left beside -o."""
    _, plan_path = mixed_plan
    out = tmp_path / "streamed.json"
    assert main(["eval", "smollm2-135m", "--plan", str(plan_path), "--sequential", *FAST_EVAL, *MIXED_CALIBRATION,
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "decoder blocks offloaded" in err and "meta device" not in err, err
    streamed = load_artifact(out, EvalResult)
    with capsys.disabled():
        print(f"\n--plan, loaded vs offloaded: reference {plan_eval.ppl_bf16:.6f} / {streamed.ppl_bf16:.6f}, "
              f"quantized {plan_eval.ppl_quant:.6f} / {streamed.ppl_quant:.6f}")
    assert streamed.ppl_bf16 == pytest.approx(plan_eval.ppl_bf16, rel=1e-5)
    assert streamed.ppl_quant == pytest.approx(plan_eval.ppl_quant, rel=2e-3)
    assert streamed.ppl_quant > streamed.ppl_bf16 * 1.05  # the quantizers were on while it scored
    assert (streamed.windows, streamed.layer_formats) == (plan_eval.windows, plan_eval.layer_formats)
    assert streamed.metadata.inputs == plan_eval.metadata.inputs and streamed.metadata.seed == 3
    assert any("calibrated one decoder block at a time" in note for note in streamed.metadata.notes)
    assert [p.name for p in tmp_path.iterdir()] == ["streamed.json"]


def _export(path, choose, tmp_path):
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.quantize.apply import export_checkpoint, quantize_model

    assignment = assignment_for(path, choose)
    model, tokenizer = load_pretrained(resolve_model(str(path)))
    batches = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    quantize_model(model, assignment, batches)
    return export_checkpoint(model, tokenizer, assignment, tmp_path / "out")


@pytest.mark.parametrize("config, choose", [
    (TINY_LLAMA, lambda i, kind: ("fp8", "int8_sq", "int4_awq", "bf16")[i % 4]),
    (TINY_QWEN2, lambda i, kind: ("int4_awq", "fp8", "bf16", "int8_sq")[i % 4]),
    (TINY_QWEN3, lambda i, kind: ("int8_sq", "int4_awq", "fp8")[i % 3]),
    (TINY_MIXTRAL, lambda i, kind: "fp8" if kind == "moe" else ("int8_sq", "bf16", "fp8")[i % 3]),
    (TINY_QWEN2_MOE, lambda i, kind: "fp8" if kind == "moe" else ("fp8", "bf16", "int8_sq")[i % 3]),
], ids=["llama", "qwen2", "qwen3", "mixtral", "qwen2_moe"])
def test_tiny_checkpoints_score_block_by_block_as_loaded(tmp_path, tokenizer_dir, config, choose, monkeypatch):
    """Dense and fused-expert models: the streamed scores are the loaded ones, and while a block runs no other
    block is in memory (the reference's skeleton holds one block's weights; each rebuilt block is freed before
    the next is rebuilt)."""
    from trtq.eval import sequential
    from trtq.eval.checkpoint import load_checkpoint_model, open_checkpoint
    from trtq.eval.perplexity import perplexity
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.sensitivity.sequential import BlockStream

    path = save_tiny(tmp_path / "model", config, tokenizer_dir)
    checkpoint = open_checkpoint(_export(path, choose, tmp_path))
    windows = torch.randint(0, 96, (3, 16), generator=torch.Generator().manual_seed(2))
    reference_model, _ = load_pretrained(resolve_model(str(path)))
    loaded = load_checkpoint_model(checkpoint, reference_model)

    rebuilt_blocks, most_materialized = [], []
    rebuild = sequential.rebuild_from_checkpoint

    def watched_rebuild(block, *args, **kwargs):
        gc.collect()
        assert all(ref() is None for ref in rebuilt_blocks), "a rebuilt block outlived its turn"
        rebuilt_blocks.append(weakref.ref(block))
        return rebuild(block, *args, **kwargs)

    reference_block = BlockStream.block

    @contextlib.contextmanager
    def watched_block(self, b):
        with reference_block(self, b) as opened:
            most_materialized.append(sum(any(not p.is_meta for p in blk.parameters()) for blk in self.blocks))
            yield opened

    monkeypatch.setattr(sequential, "rebuild_from_checkpoint", watched_rebuild)
    monkeypatch.setattr(BlockStream, "block", watched_block)
    scores = sequential.sequential_checkpoint_scores(resolve_model(str(path)), checkpoint, windows, "cpu",
                                                     "float32", lambda message: None)
    assert scores.reference.ppl == pytest.approx(perplexity(reference_model, windows).ppl, rel=1e-5)
    assert scores.quantized.ppl == pytest.approx(perplexity(loaded.model, windows).ppl, rel=1e-5)
    assert scores.quantized.ppl != pytest.approx(scores.reference.ppl, rel=1e-4)
    assert scores.layer_formats == loaded.layer_formats
    experts = config.get("num_local_experts", config.get("num_experts"))
    if experts:  # ModelOpt names the FP8 experts once per layer; each of their GEMMs rebuilt in FP8
        assert scores.layer_formats["fp8"] >= 3 * experts * config["num_hidden_layers"]
    assert len(rebuilt_blocks) == config["num_hidden_layers"]
    assert most_materialized == [1] * config["num_hidden_layers"]


# --- refusals: one line, exit 2, nothing written ----------------------------------------------------

def run_eval(capsys, tmp_path, *argv):
    out = tmp_path / "eval.json"
    code = main(["eval", "smollm2-135m", *argv, "--seq-len", "16", "--windows", "1", "-o", str(out)])
    err = capsys.readouterr().err
    return code, err.splitlines()[-1] if err else "", out.exists()


def test_what_sequential_cannot_do_is_refused_before_any_model_work(mixed_export, tmp_path, capsys):
    plan, plan_path, out = mixed_export
    code, last, written = run_eval(capsys, tmp_path, "--checkpoint", str(out), "--sequential",
                                   "--lm-eval", "trtq_devil_definitions")
    assert (code, written) == (2, False) and "drop --sequential or --lm-eval" in last, last


def test_a_quantized_head_is_refused(mixed_export, tmp_path, capsys):
    directory = copy_checkpoint(mixed_export[2], tmp_path / "ckpt")
    edit_json(directory / "hf" / "hf_quant_config.json",
              lambda q: q["quantization"]["quantized_layers"].__setitem__("lm_head", {"quant_algo": "FP8"}))
    with pytest.raises(UnsupportedError, match="quantizes the output head lm_head"):
        from trtq.eval.checkpoint import open_checkpoint
        from trtq.eval.sequential import CheckpointBlockStream
        from trtq.model.layers import build_layer_graph
        from trtq.model.zoo import require_embedded_model

        resolved = require_embedded_model()
        CheckpointBlockStream(resolved, build_layer_graph(resolved), "cpu", "float32", open_checkpoint(directory))
    code, last, written = run_eval(capsys, tmp_path, "--checkpoint", str(directory), "--sequential")
    assert (code, written) == (2, False) and "drop --sequential" in last, last


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.pop("model.layers.0.self_attn.o_proj.weight_scale"),
     "lacks tensor model.layers.0.self_attn.o_proj.weight_scale"),
    (lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.k_scale", torch.tensor(1.0)),
     "model.layers.0.self_attn.k_proj.k_scale is not a tensor of the model"),
])
def test_broken_checkpoint_tensors_are_refused_block_by_block(mixed_export, tmp_path, capsys, edit, needle):
    """Found in the block that reads them or, for a tensor no block reads, after the pass; nothing written."""
    import shutil

    out = mixed_export[2]
    directory = copy_checkpoint(out, tmp_path / "ckpt")
    (directory / "hf" / "model.safetensors").unlink()
    shutil.copyfile(out / "hf" / "model.safetensors", directory / "hf" / "model.safetensors")
    rewrite_weights(directory, edit)
    code, last, written = run_eval(capsys, tmp_path, "--checkpoint", str(directory), "--sequential")
    assert (code, written) == (2, False) and last.startswith("trtq: error:") and needle in last, last


def test_nvfp4_on_a_cpu_is_refused_with_sequential(smollm2_graph, tmp_path, capsys):
    """On a CPU an NVFP4 layer is trtq's reference weights substituted into the loaded model: not offloaded."""
    import torch

    from tests.helpers.plans import plan_from_graph
    from trtq.artifacts import save_artifact

    if torch.cuda.is_available():
        pytest.skip("with CUDA, ModelOpt fake-quantizes NVFP4 itself: nothing to refuse")
    plan = save_artifact(plan_from_graph(smollm2_graph, lambda i, name, kind: "nvfp4" if i == 0 else "bf16"),
                         tmp_path / "plan.yaml")
    code, last, written = run_eval(capsys, tmp_path, "--plan", str(plan), "--sequential")
    assert (code, written) == (2, False) and "NVFP4 layers" in last and "drop --sequential" in last, last


@requires_gpu
def test_tiny_checkpoint_scores_on_cuda_as_on_the_cpu(tmp_path, tokenizer_dir):
    """Block by block and loaded, on the GPU: the rebuilt layers follow the model to its device."""
    from trtq.eval.checkpoint import load_checkpoint_model, open_checkpoint
    from trtq.eval.perplexity import perplexity
    from trtq.eval.sequential import sequential_checkpoint_scores
    from trtq.model.zoo import load_pretrained, resolve_model

    path = save_tiny(tmp_path / "model", TINY_LLAMA, tokenizer_dir)
    checkpoint = open_checkpoint(_export(path, lambda i, kind: ("fp8", "int4_awq", "bf16")[i % 3], tmp_path))
    windows = torch.randint(0, 96, (3, 16), generator=torch.Generator().manual_seed(2))
    resolved = resolve_model(str(path))
    on_cpu = sequential_checkpoint_scores(resolved, checkpoint, windows, "cpu", "float32", lambda message: None)
    on_gpu = sequential_checkpoint_scores(resolved, checkpoint, windows, "cuda:0", "float32", lambda message: None)
    assert on_gpu.reference.ppl == pytest.approx(on_cpu.reference.ppl, rel=1e-4)
    assert on_gpu.quantized.ppl == pytest.approx(on_cpu.quantized.ppl, rel=1e-4)
    model, _ = load_pretrained(resolved, device="cuda:0")
    loaded = load_checkpoint_model(checkpoint, model)
    assert perplexity(loaded.model, windows).ppl == pytest.approx(on_cpu.quantized.ppl, rel=1e-4)
