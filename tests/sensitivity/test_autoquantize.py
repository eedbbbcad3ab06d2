"""AutoQuantize's own scores as a trtq table, checked against ModelOpt's own search on a tiny Llama.

Hidden width 64 and MLP width 128: INT4 takes group 64 in q/k/v/o/gate/up and group 128 in
down_proj, so the per-layer search spaces are exercised too.
"""

import copy
import warnings

import numpy as np
import pytest
import torch

from trtq.artifacts import load_artifact, make_metadata, save_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.plan.bits import effective_bits, effective_bits_constraint
from trtq.plan.costs import build_cost_model
from trtq.plan.ilp import IlpProblem, solve
from trtq.profile.api import build_profile
from trtq.registry import parse_formats
from trtq.sensitivity.autoquantize import autoquantize_table_rows, recipe_option, run_autoquantize

pytestmark = pytest.mark.slow   # ModelOpt calibrates every candidate (about a minute on 2 quiet cores)

FORMATS = "bf16,fp8,int4_awq"
LOSS_SCALE = 1e3


@pytest.fixture(scope="module")
def searched(tiny, tmp_path_factory):
    model, graph, batches = tiny
    formats = parse_formats(FORMATS)
    checkpoint = str(tmp_path_factory.mktemp("aq") / "search.pth")
    torch.manual_seed(0)
    # Loss x 1e3, scores x 1e6: the tiny random model's scores are ~1e-6, where ModelOpt's CBC LP stops
    # short of the optimum (any feasible pick passes its tolerance), which would test CBC, not the scores.
    run = run_autoquantize(model, graph, formats, batches, score="gradient", batch_size=2, checkpoint=checkpoint,
                           loss_scale=LOSS_SCALE)
    errors = {(layer.name, f.name): 0.0 for layer in graph.layers for f in formats}
    rows, groups = autoquantize_table_rows(graph, formats, run, errors)
    table = Sensitivity.create(metadata=make_metadata(), model=graph.model, method="autoquantize",
                        formats=[f.name for f in formats], settings={"autoquantize_groups": groups}, rows=rows)
    return run, table, checkpoint


def test_scores_read_back_equal_the_searchers(searched, tiny, tmp_path):
    run, table, _ = searched
    _, graph, _ = tiny
    omega = table.omega_map()
    stats = run.state["candidate_stats"]
    searched_groups = 0
    for stat in stats.values():
        members = [m for m in stat["module_names"] if any(m == layer.name for layer in graph.layers)]
        if not members:
            assert all("lm_head" in m for m in stat["module_names"])   # disabled, as hf_ptq.py does
            continue
        searched_groups += 1
        for recipe, score in zip(stat["formats"], stat["scores"]):
            bits = recipe.compression * 16
            fmt = {16: "bf16", 8: "fp8", 4: "int4_awq"}[round(bits)]
            assert sum(omega[m, fmt] for m in members) == pytest.approx(score, rel=1e-9, abs=1e-30)
    # AutoQuantize groups q/k/v and gate/up as trtq does; o_proj and down_proj alone.
    assert searched_groups == len(graph.groups) == 8
    assert {tuple(sorted(s["module_names"])) for s in stats.values() if "lm_head" not in s["module_names"][0]} == \
        {tuple(sorted(g.members)) for g in graph.groups}
    # The scores mean something: INT4 costs more than FP8 in every group, bf16 nothing.
    for g in graph.groups:
        assert sum(omega[m, "int4_awq"] for m in g.members) > sum(omega[m, "fp8"] for m in g.members) > 0
        assert all(omega[m, "bf16"] == 0 for m in g.members)
    # down_proj's INT4 candidate is group 128, the others group 64, and the table says so.
    sizes = {(r.layer.rsplit(".", 1)[-1], r.format): r.group_size for r in table.rows}
    assert sizes["down_proj", "int4_awq"] == 128 and sizes["q_proj", "int4_awq"] == 64
    # Raw per-layer scores were read from this run's searcher; the round trip keeps everything.
    assert all(r.raw_score is not None for r in table.rows if r.format != "bf16")
    path = tmp_path / "aq.json"
    save_artifact(table, path)
    assert load_artifact(path, Sensitivity) == table


@pytest.mark.parametrize("bits", [6.0, 9.0, 12.0])
def test_plan_at_autoquantizes_effective_bits_reproduces_its_choice(searched, tiny, bits):
    import modelopt.torch.quantization as mtq

    from trtq.sensitivity.autoquantize import search_space

    run, table, checkpoint = searched
    model, graph, batches = tiny
    formats = parse_formats(FORMATS)
    space = search_space(model, graph, formats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, state = mtq.auto_quantize(       # ModelOpt's own search, its scores restored from the checkpoint
            copy.deepcopy(model), constraints={"effective_bits": bits},
            quantization_formats=space.quantization_formats, module_search_spaces=space.module_search_spaces,
            data_loader=[batches[:2], batches[2:]], forward_step=lambda m, ids: m(input_ids=ids, labels=ids),
            loss_func=lambda out, ids: out.loss * LOSS_SCALE, disabled_layers=space.disabled_layers, num_calib_steps=2,
            num_score_steps=2, method="gradient", checkpoint=checkpoint, verbose=False)
    theirs = {}
    for hparam, recipe in state["best"]["recipe"].items():
        for module in state["candidate_stats"][hparam]["module_names"]:
            theirs[module] = recipe_option(recipe, run.options)[0]

    profile = build_profile(graph, "roofline", "h100", [16], FORMATS)
    costs = build_cost_model(graph, profile, table, formats, {"decode@16": 16})
    lm_head = model.lm_head.weight.numel()
    sol = solve(IlpProblem(costs.omega, [effective_bits_constraint(costs, bits, fixed_parameters=lm_head)]),
                mip_rel_gap=0.0)
    assert sol.feasible
    ours = {m: costs.formats[int(sol.choice[g])] for g, group in enumerate(costs.groups) for m in group.members}
    assert ours == {m: f for m, f in theirs.items() if "lm_head" not in m}
    assert sol.objective == pytest.approx(state["best"]["score"], rel=1e-9)
    # Both sides account the bits the same way, lm_head at 16 in the denominator.
    assert effective_bits(costs, sol.choice, lm_head) == pytest.approx(state["best"]["constraints"]["effective_bits"])
    assert effective_bits(costs, sol.choice, lm_head) <= bits + 1e-9
    assert len(set(ours.values())) > 1   # a real trade-off: all-INT4 is 4.9 bits, all-FP8 8.6 here
    assert np.isfinite(sol.objective)


def test_kl_div_scores_read_back(tiny):
    model, graph, batches = tiny
    formats = parse_formats("bf16,fp8")
    run = run_autoquantize(model, graph, formats, batches, score="kl_div", batch_size=3)
    rows, groups = autoquantize_table_rows(graph, formats, run, {(la.name, f.name): 0.0 for la in graph.layers
                                                                  for f in formats})
    omega = {(r.layer, r.format): r.omega for r in rows}
    for entry in groups:
        members = [m for m in entry["members"] if m in {la.name for la in graph.layers}]
        for option in entry["options"]:
            assert sum(omega[m, option["format"]] for m in members) == pytest.approx(option["score"], rel=1e-9)
    assert all(omega[la.name, "fp8"] > 0 for la in graph.layers)
    assert run.scoring_seconds is not None and run.seconds >= run.scoring_seconds


def test_cli_autoquantize_on_the_real_model(tmp_path, capsys, smollm2_graph):
    from trtq.cli import main

    out = tmp_path / "aq.json"
    code = main(["sensitivity", "smollm2-135m", "--method", "autoquantize", "--samples", "2", "--seq-len", "32",
                 "--score-batch", "1", "--formats", "fp8", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    table = load_artifact(out, Sensitivity)
    assert table.method == "autoquantize" and table.formats == ["bf16", "fp8"]
    assert table.settings["score"] == "gradient" and table.settings["batch_size"] == 1
    assert len(table.rows) == 2 * len(smollm2_graph.layers)       # lm_head not searched, not in the table
    fp8 = {r.layer: r for r in table.rows if r.format == "fp8"}
    assert all(r.omega > 0 and r.raw_score > 0 and r.weight_error > 0 for r in fp8.values())
    groups = {tuple(g["members"]) for g in table.settings["autoquantize_groups"]}
    assert groups == {tuple(g.members) for g in smollm2_graph.groups}


def test_cli_autoquantize_refuses_nvfp4_on_cpu(capsys):
    from trtq.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, where ModelOpt calibrates NVFP4")
    code = main(["sensitivity", "smollm2-135m", "--method", "autoquantize", "--samples", "1", "--seq-len", "16",
                 "--formats", "nvfp4", "-o", "unused.json"])
    err = capsys.readouterr().err
    assert code == 2 and "nvfp4" in err and "CUDA GPU" in err and len(err.strip().splitlines()) == 1
