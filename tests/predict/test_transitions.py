"""The format-transition term is counted once (issue 16's double-count question).

A modelled profile row (the roofline, calibrated on aiconfigurator's tables with its fitted
activation-quantize pass) carries that pass in its latency (details.activation_quantize_ns). The step
model prices the same quantize itself, as the transition term, and only where the producer of the
group's input does not fuse it. Reading such a row whole and adding the transition counted the
quantize twice where no producer fuses it (o_proj after attention at NVFP4), and once where a fused
producer makes it free (qkv after the norm). ProfileGemms takes the GEMM alone: row less the pass.
"""

from __future__ import annotations

import pytest

from tests.predict.test_step_model import ONE_BLOCK, TableKernels
from trtq.artifacts import make_metadata
from trtq.artifacts.profile import Profile, ProfileRow
from trtq.predict.api import ProfileGemms
from trtq.predict.step import StepModel
from trtq.registry import get_gpu

PASS_NS = 3000.0


def _profile(pass_ns: float) -> Profile:
    rows = []
    for g in ONE_BLOCK.groups:
        for t in (16, 128):
            for fmt, base in (("bf16", 20000.0), ("nvfp4", 10000.0)):
                quantize = pass_ns if fmt == "nvfp4" else 0.0
                rows.append(ProfileRow(out_features=g.out_features, in_features=g.in_features, tokens=t, format=fmt,
                                       status="ok", latency_ns=base + t + quantize, method="roofline",
                                       provenance="modelled",
                                       details={"activation_quantize_ns": quantize, "provenance": "modelled"}))
    return Profile(artifact=Profile.KIND, schema_version=Profile.SCHEMA_VERSION, metadata=make_metadata(),
                   model="toy", gpu="B200", backend="roofline", launch_cost_ns=0.0, tokens=[16, 128],
                   formats=["bf16", "nvfp4"], rows=rows)


def test_profile_row_activation_pass_is_not_counted_twice():
    step = StepModel(ONE_BLOCK, {g.name: "nvfp4" for g in ONE_BLOCK.groups}, "bf16", 1, TableKernels(),
                     get_gpu("B200"), gemms=ProfileGemms(_profile(PASS_NS), "p.json", 1))
    by_kind = {g.kind: step.group_cost(g, "nvfp4", 16) for g in ONE_BLOCK.groups}
    for kind, (gemm, transition) in by_kind.items():
        assert gemm.ms == pytest.approx((10000.0 + 16) / 1e6), kind      # the GEMM alone
    # Fused producers (norm -> qkv/gate_up, SiLU -> down_proj) emit NVFP4: no quantize at all.
    assert [by_kind[k][1].ms for k in ("qkv", "gate_up", "down_proj")] == [0.0, 0.0, 0.0]
    # Attention emits bf16: o_proj pays one standalone quantize, the step model's own, once.
    o_gemm, o_trans = by_kind["o_proj"]
    assert o_trans.ms == pytest.approx(step.quantize_cost("nvfp4", 16, 128).ms) and o_trans.ms > 0
    cost = step.non_attention(16, 16)
    assert cost.by_category["format_transitions"] == pytest.approx(o_trans.ms)
    assert cost.by_category["gemm_nvfp4"] == pytest.approx(4 * (10000.0 + 16) / 1e6)


def test_rows_without_a_pass_are_read_whole():
    """Measured rows (no activation_quantize_ns) are taken as they are."""
    gemms = ProfileGemms(_profile(0.0), "p.json", 1)
    assert gemms.gemm(128, 128, "nvfp4", 128).ms == pytest.approx((10000.0 + 128) / 1e6)
    with_pass = ProfileGemms(_profile(PASS_NS), "p.json", 1)
    assert with_pass.gemm(128, 128, "nvfp4", 128).ms == pytest.approx(gemms.gemm(128, 128, "nvfp4", 128).ms)
