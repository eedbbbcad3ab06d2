"""A format added as one module (tests/formats/toy_format.py), registered, and planned end to end on the
roofline: profile, a sensitivity table from its own reference quantizer, solve. No other file changes;
the runtime table (data, profiles/runtimes.yaml) gets its row in memory for the test."""

import pytest
import torch

from trtq.artifacts import make_metadata
from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
from trtq.errors import InputError, UnknownNameError
from trtq.formats import FORMATS, checkpoint_algo_formats, register_format
from trtq.plan.api import PlanRequest, solve_plan
from trtq.profile.api import build_profile
from trtq.registry import get_format, get_gpu
from trtq.registry.runtimes import FormatSupport, get_runtime
from trtq.sensitivity.quantizers import weight_error

from tests.formats.toy_format import TOY

ROWS_SAMPLED = 64  # rows of each (seeded, random) weight the sensitivity scores: enough to rank formats


def weight_sensitivity(graph, formats, seed=0) -> Sensitivity:
    """||Q_f(W) - W||^2 of a seeded Gaussian weight of each layer's shape (first rows), per format,
    through the formats' own reference quantizers."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for layer in graph.layers:
        w = torch.randn(min(layer.out_features, ROWS_SAMPLED), layer.in_features, generator=gen)
        for fmt in formats:
            if fmt.available_for(layer.in_features):
                error = weight_error(w, fmt)
                rows.append(SensitivityRow(layer=layer.name, format=fmt.name,
                                           group_size=fmt.group_size_for(layer.in_features),
                                           weight_error=error, omega=error))
    return Sensitivity(artifact="sensitivity", schema_version=Sensitivity.SCHEMA_VERSION,
                       metadata=make_metadata(seed=seed), model=graph.model, method="weight",
                       formats=[f.name for f in formats], rows=rows)


@pytest.fixture
def toy_registered(monkeypatch):
    runtime = get_runtime(None)
    monkeypatch.setitem(runtime.formats, TOY.name,
                        FormatSupport(archs=["ampere", "ada", "hopper", "blackwell"], source="tests/formats"))
    with register_format(TOY):
        yield runtime
    assert TOY.name not in FORMATS


def test_a_registered_format_plans_end_to_end_on_the_roofline(smollm2_graph, toy_registered):
    assert get_format("toy_int6") is TOY
    gpu = get_gpu("H100-SXM")
    profile = build_profile(smollm2_graph, "roofline", gpu.name, [16, 2048], formats="toy_int6,fp8",
                            launch_cost_ns=0)
    toy_rows = [r for r in profile.rows if r.format == "toy_int6"]
    assert toy_rows and all(r.status == "ok" and r.latency_ns > 0 for r in toy_rows)
    formats = [get_format(n) for n in ("bf16", "fp8", "int4_awq", "toy_int6")]
    sensitivity = weight_sensitivity(smollm2_graph, formats)
    omega = {(r.layer, r.format): r.omega for r in sensitivity.rows}
    layer = smollm2_graph.layers[0].name
    # 6 bits per channel sit between INT4 groups and BF16: the reference quantizer is the toy's own.
    assert omega[(layer, "bf16")] < omega[(layer, "toy_int6")] < omega[(layer, "int4_awq")]
    # A toy weight is 6/8 of an FP8 one (plus its per-channel scales) and reads at bf16 activations: with a memory
    # budget FP8 cannot meet, the planner must use the toy format.
    fp8_bytes = sum(get_format("fp8").weight_bytes(g.out_features, g.in_features) for g in smollm2_graph.layers)
    plan = solve_plan(smollm2_graph, profile, sensitivity, gpu,
                      PlanRequest(budgets=["prefill@2048=1.0"], formats="fp8,toy_int6",
                                  memory_gb=(0.9 * fp8_bytes + smollm2_graph.fixed_parameter_bytes) / 1e9))
    assert plan.candidate_formats == ["bf16", "fp8", "toy_int6"]
    chosen = {g.format for g in plan.groups}
    assert "toy_int6" in chosen
    assert plan.totals.weight_bytes <= plan.memory_budget_bytes


def test_register_format_refuses_a_clash_and_unregisters():
    with pytest.raises(InputError, match="already registered"):
        with register_format(get_format("fp8")):
            pass
    with register_format(TOY):
        assert "toy_int6" in FORMATS
    assert "toy_int6" not in FORMATS
    with pytest.raises(UnknownNameError):
        get_format("toy_int6")


def test_checkpoint_algorithms_map_one_way_and_back():
    algos = checkpoint_algo_formats()
    for fmt in FORMATS.values():
        for algo in fmt.checkpoint_algos:
            assert algos[algo] is fmt
        if fmt.quantized and not fmt.export_refusal:
            assert fmt.checkpoint_algo is not None, fmt.name  # what trtq quantize exports must read back
    assert algos["W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN"].name == "int8_sq"
