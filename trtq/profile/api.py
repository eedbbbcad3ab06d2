"""Library entry point of the profile stage: model -> unique GEMM shapes -> latency table."""

from __future__ import annotations

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.profile import Profile
from trtq.errors import InputError
from trtq.profile.backends import BackendRequest, make_backend
from trtq.profile.harness import GemmCase
from trtq.registry import get_gpu, parse_formats


def parse_tokens(spec: str | list[int]) -> list[int]:
    if isinstance(spec, list):
        values = spec
    else:
        try:
            values = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise InputError(f"--tokens must be comma-separated positive integers, got {spec!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"--tokens must be comma-separated positive integers, got {spec!r}")
    return sorted(set(values))


def gemm_cases(graph: LayerGraph, tokens: list[int], formats: list[str]) -> list[GemmCase]:
    """One case per unique (out, in) shape x format x token count: layers sharing a shape are measured once."""
    return [GemmCase(n, k, m, f) for (n, k) in graph.unique_shapes() for f in formats for m in tokens]


def build_profile(graph: LayerGraph, backend_name: str, gpu: str | None, tokens: list[int],
                  formats: str | None = None, launch_cost_ns: float | None = None,
                  harness: dict | None = None, seed: int = 0, on_row=None) -> Profile:
    gpu_spec = get_gpu(gpu) if gpu and gpu != "auto" else None
    fmts = parse_formats(formats)
    if gpu_spec is not None:
        if formats:
            for f in fmts:
                gpu_spec.require(f)
        else:
            fmts = [f for f in fmts if gpu_spec.supports(f)]
    backend = make_backend(backend_name, BackendRequest(gpu=gpu, launch_cost_ns=launch_cost_ns,
                                                        harness=harness or {}, seed=seed))
    format_names = [f.name for f in fmts]
    rows = backend.profile(gemm_cases(graph, tokens, format_names), on_row=on_row)
    device = backend.device_info()
    return Profile(
        artifact=Profile.KIND,
        schema_version=Profile.SCHEMA_VERSION,
        metadata=make_metadata(seed=seed, notes=[
            f"{len(graph.unique_shapes())} unique GEMM shapes (fused groups) for {len(graph.layers)} layers",
            "launch_cost_ns = 0: pure kernel time" if backend.launch_cost_ns == 0 and backend_name == "roofline"
            else f"every latency includes a launch cost of {backend.launch_cost_ns:g} ns",
        ]),
        model=graph.model,
        gpu=device.get("gpu", backend_name) if gpu_spec is None else gpu_spec.name,
        backend=backend.name,
        launch_cost_ns=backend.launch_cost_ns,
        tokens=tokens,
        formats=format_names,
        device=device,
        settings=backend.settings(),
        rows=rows,
    )
