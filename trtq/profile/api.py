"""Library entry point of the profile stage: model -> unique GEMM shapes -> latency table."""

from __future__ import annotations

from trtq.artifacts import make_metadata
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.profile import Profile, ProfileRow
from trtq.errors import InputError
from trtq.profile.backends import BackendRequest, make_backend
from trtq.profile.harness import GemmCase, case_fields
from trtq.registry import get_gpu, parse_formats


def parse_tokens(spec: str | list[int]) -> list[int]:
    from trtq.options import int_list

    return int_list(",".join(map(str, spec)) if isinstance(spec, list) else spec, "--tokens")


def gemm_cases(graph: LayerGraph, tokens: list[int], formats: list[str]) -> list[GemmCase]:
    """One case per unique (out, in) shape x format x token count: layers sharing a shape are measured once."""
    return [GemmCase(n, k, m, f, e, t) for (n, k, e, t) in graph.unique_gemms() for f in formats for m in tokens]


def unsupported_moe_row(backend, case: GemmCase) -> ProfileRow:
    """An MoE case for a backend without `moe_grouped_gemm`, which would time it as one dense GEMM."""
    return ProfileRow(
        **case_fields(case),
        method="none",
        status="unsupported",
        latency_ns=None,
        reason=f"the {backend.name} backend does not cost MoE grouped GEMMs yet (the roofline backend does)",
    )


def _resolve_auto_gpu() -> str:
    from trtq.profile.cuda import detect_registry_gpu

    gpu, _ = detect_registry_gpu()
    return gpu.name


# `--runtime all` (as in `trtq formats --runtime all`): every format some runtime runs on the GPU, one table
# for plans under any runtime.
ALL_RUNTIMES = "all"


def build_profile(
    graph: LayerGraph,
    backend_name: str,
    gpu: str | None,
    tokens: list[int],
    formats: str | None = None,
    launch_cost_ns: float | None = None,
    harness: dict | None = None,
    seed: int = 0,
    on_row=None,
    options: dict | None = None,
    inputs: dict | None = None,
    runtime: str | None = None,
    tp: int = 1,
) -> Profile:
    """`options`: cuda_graphs (cuda backend); calibration, a RooflineCalibration (roofline backend);
    framework, framework_version (aiconfigurator backend). `tp` > 1: one GPU's GEMMs under tensor
    parallelism (LayerGraph.sharded), for plans and predictions at that --tp.
    `inputs`: files the table depends on (a calibration, a measured table), recorded with sha256."""
    options = dict(options or {})
    calibration = options.get("calibration")
    if calibration is not None and backend_name != "roofline":
        raise InputError(f"a roofline calibration applies to the roofline backend, not {backend_name}")
    if calibration is not None and not gpu:
        gpu = calibration.gpu
    measures_gpu_in_hand = backend_name == "cuda"
    if gpu == "auto" and not measures_gpu_in_hand:
        gpu = _resolve_auto_gpu()
    backend = make_backend(
        backend_name,
        BackendRequest(
            gpu=None if gpu == "auto" else gpu,
            launch_cost_ns=launch_cost_ns,
            harness=harness or {},
            seed=seed,
            options=options,
        ),
    )
    if measures_gpu_in_hand:
        gpu_spec = backend.registry_gpu
        if gpu and gpu != "auto" and get_gpu(gpu).name != gpu_spec.name:
            raise InputError(
                f"--gpu {gpu}, but the GPU here is {backend.device_info().get('name')} "
                f"({gpu_spec.name}): the cuda backend measures the GPU in hand; use --gpu auto"
            )
    else:
        gpu_spec = get_gpu(gpu) if gpu else None
    fmts = parse_formats(formats)
    runtime_note = None
    if gpu_spec is not None:
        from trtq.registry.runtimes import get_runtime, plannable_formats, union_formats

        # Without --runtime the table covers the formats the default runtime (the release docker/ pins, PyTorch
        # backend) runs on this GPU; --runtime all covers every format some runtime in profiles/runtimes.yaml
        # runs there, so one profile serves plans for any of them.
        every_runtime = (runtime or "").lower() == ALL_RUNTIMES
        chosen = None if every_runtime else get_runtime(runtime)
        if formats:
            if chosen is not None and runtime:
                plannable_formats(gpu_spec, chosen, formats)  # refuses, naming the reason
            for f in fmts:
                gpu_spec.require(f)
        elif not measures_gpu_in_hand:
            # A measuring backend keeps every format: what it cannot run is an unsupported row with a reason.
            allowed = {
                f.name for f in (union_formats(gpu_spec) if every_runtime else plannable_formats(gpu_spec, chosen))
            }
            fmts = [f for f in fmts if f.name in allowed and gpu_spec.supports(f)]
            runtime_note = (
                "formats: every format some runtime in profiles/runtimes.yaml runs on "
                f"{gpu_spec.name} (--runtime {ALL_RUNTIMES})"
                if every_runtime
                else f"formats: those runtime {chosen.name} ({chosen.backend} backend"
                f"{', the default' if not runtime else ''}) runs on {gpu_spec.name}"
                + (
                    f"; --runtime NAME@VERSION for another runtime's, --runtime {ALL_RUNTIMES} for every runtime's"
                    if not runtime
                    else ""
                )
            )
    format_names = [f.name for f in fmts]
    full_graph, graph = graph, graph.sharded(tp)
    cases = gemm_cases(graph, tokens, format_names)
    moe_rows = (
        []
        if getattr(backend, "moe_grouped_gemm", False)
        else [unsupported_moe_row(backend, c) for c in cases if c.experts is not None]
    )
    rows = backend.profile([c for c in cases if not moe_rows or c.experts is None], on_row=on_row) + moe_rows
    device = backend.device_info()
    notes = [
        f"{len(graph.unique_shapes())} unique GEMM shapes (fused groups) for {len(graph.layers)} layers"
        + (f", one GPU's shapes under tensor parallelism {tp}" if tp > 1 else "")
    ]
    if runtime_note:
        notes.append(runtime_note)
    if backend.name == "aiconfigurator":
        settings = backend.settings()
        counts: dict[str, int] = {}
        for row in rows:
            if row.latency_ns is not None:
                counts[row.provenance] = counts.get(row.provenance, 0) + 1
        notes.append(
            f"{settings['package']} {settings['package_version']} tables of {settings['system']}, "
            f"{settings['framework']} {settings['framework_version']}: "
            + ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
            + " rows; no launch cost added"
        )
    elif getattr(backend, "measures", False):
        notes.append(f"latencies are medians of measured {backend.name} kernel times; no launch cost added")
    elif backend.launch_cost_ns == 0:
        notes.append("launch_cost_ns = 0: pure kernel time")
    else:
        notes.append(f"every latency includes a launch cost of {backend.launch_cost_ns:g} ns")
    if calibration is not None:
        notes.append(
            f"roofline calibrated on {calibration.source_profile.path} "
            f"(sha256 {calibration.source_profile.sha256}): median |error| "
            f"{calibration.before.median_abs_rel_error:.1%} -> {calibration.after.median_abs_rel_error:.1%}"
        )
    return Profile.create(
        metadata=make_metadata(inputs=inputs or {}, seed=seed, notes=notes),
        model=full_graph.model,
        gpu=device.get("gpu", backend_name) if gpu_spec is None else gpu_spec.name,
        backend=backend.name,
        launch_cost_ns=backend.launch_cost_ns,
        tokens=tokens,
        formats=format_names,
        tp=tp,
        device=device,
        settings=backend.settings(),
        rows=rows,
    )


def tables_or_roofline_profile(
    graph: LayerGraph, gpu: str, tokens: list[int], *, runtime: str | None = None, formats: str | None = None
) -> tuple[Profile, str]:
    """(profile, one line saying where its latencies come from): NVIDIA's measured kernel tables
    (aiconfigurator-core, TensorRT-LLM) where the package has them for the GPU, their rows measured,
    interpolated or extrapolated, and modelled by the roofline calibrated on the GPU's measured formats where
    the tables lack a format; else (no tables for the GPU, or the package missing) the datasheet roofline at
    kernel time (launch cost 0)."""
    from trtq.errors import MissingToolError, UnknownNameError, UnsupportedError

    try:
        profile = build_profile(graph, "aiconfigurator", gpu, tokens, formats, runtime=runtime)
    except (UnknownNameError, UnsupportedError, MissingToolError) as exc:
        if isinstance(exc, UnknownNameError) and "has no tables for" not in str(exc):
            raise  # an unknown GPU or runtime is the caller's mistake, not a missing table
        profile = build_profile(graph, "roofline", gpu, tokens, formats, launch_cost_ns=0.0, runtime=runtime)
        return profile, f"datasheet roofline, kernel time (launch cost 0): {exc}"
    s = profile.settings
    counts = profile.provenance_counts()
    line = (
        f"{s['package']} {s['package_version']} measured tables ({s['system']}, {s['framework']} "
        f"{s['framework_version']}): " + ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) + " rows"
    )
    modelled = sorted({r.format for r in profile.rows if r.provenance == "modelled"})
    if modelled:
        line += (
            f"; {', '.join(modelled)} modelled by the roofline calibrated on this GPU's measured formats "
            "(the tables lack them)"
        )
    return profile, line
