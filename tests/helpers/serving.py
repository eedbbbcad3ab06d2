"""Inputs for serving tests: Llama-3.1-8B's shipped config, roofline profiles, a seeded sensitivity with FP8 KV."""

from __future__ import annotations

from pathlib import Path

WORKLOAD = "isl=2048,osl=256,concurrency=32"
TOKENS = [1, 16, 128, 2048, 4096]


def llama_serving_inputs(directory: Path, gpus: tuple[str, ...] = ("H100-SXM",)):
    """(layer graph, {gpu: saved roofline profile path}, sensitivity saved at directory/sens.json).

    Kernel-time rooflines (launch cost 0) and synthetic Omega (tests.plan.test_planner) with an FP8
    KV-cache row of 0.05; the graph from config.json alone (no torch)."""
    from tests.plan.test_planner import synthetic_sensitivity
    from trtq.artifacts import save_artifact
    from trtq.model.families import config_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile

    graph = config_layer_graph(resolve_model("llama-3.1-8b"), include_lm_head=False)
    profiles = {}
    for gpu in gpus:
        profiles[gpu] = directory / f"profile-{gpu}.json"
        save_artifact(build_profile(graph, "roofline", gpu, TOKENS, launch_cost_ns=0), profiles[gpu])
    sensitivity = synthetic_sensitivity(graph)
    sensitivity.kv_cache = {"fp8": 0.05}
    save_artifact(sensitivity, directory / "sens.json")
    return graph, profiles, sensitivity
