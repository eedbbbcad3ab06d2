"""The default profile of the demo and pipeline: measured tables where the package has them, roofline where not."""

from __future__ import annotations

import pytest

from trtq.profile.api import tables_or_roofline_profile
from trtq.registry import get_gpu

pytest.importorskip("aiconfigurator_core")


def test_h100_profile_comes_from_the_tables_and_says_what_is_modelled(smollm2_graph):
    profile, line = tables_or_roofline_profile(smollm2_graph, "H100-SXM", [16], formats="bf16,fp8,int4_awq")
    assert profile.backend == "aiconfigurator" and profile.launch_cost_ns == 0
    counts = profile.provenance_counts()
    assert counts["modelled"] == 4 and counts.get("measured", 0) + counts.get("interpolated", 0) == 8, counts
    assert line.startswith("aiconfigurator-core 0.12.0 measured tables (h100_sxm, trtllm 1.3.0rc20): ")
    assert "int4_awq modelled by the roofline calibrated on this GPU's measured formats" in line


def test_a_gpu_without_tables_falls_back_to_the_roofline_and_says_why(smollm2_graph, monkeypatch):
    monkeypatch.setattr(get_gpu("L40S"), "aiconfigurator_system", None)
    profile, line = tables_or_roofline_profile(smollm2_graph, "L40S", [16], formats="bf16,fp8")
    assert profile.backend == "roofline" and profile.launch_cost_ns == 0
    assert set(profile.provenance_counts()) == {"modelled"}
    assert line.startswith("datasheet roofline, kernel time (launch cost 0): ") and "no tables for L40S" in line
