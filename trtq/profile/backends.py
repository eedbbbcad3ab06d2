"""The profiler backend registry: every backend, registered here by name.

Each factory takes the parsed profile request and returns a backend object with
`name`, `launch_cost_ns`, `device_info()`, `settings()` and `profile(cases, on_row)`.
Factories import their heavy dependencies themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trtq.errors import UnknownNameError


@dataclass(frozen=True)
class BackendRequest:
    gpu: str | None
    launch_cost_ns: float | None
    harness: dict
    seed: int
    # Backend-specific options: cuda_graphs (cuda); calibration, a RooflineCalibration (roofline);
    # framework, framework_version, systems_root (aiconfigurator).
    options: dict[str, Any] = field(default_factory=dict)


def _roofline(req: BackendRequest):
    from trtq.errors import InputError
    from trtq.profile.roofline import RooflineBackend, RooflineParams
    from trtq.registry import get_gpu

    if not req.gpu:
        raise InputError("the roofline backend needs --gpu (see `trtq gpus`)")
    gpu = get_gpu(req.gpu)
    calibration = req.options.get("calibration")
    if calibration is not None:
        from trtq.profile.calibrate import CalibratedRooflineBackend

        return CalibratedRooflineBackend(gpu, calibration, req.launch_cost_ns)
    return RooflineBackend(gpu, RooflineParams.for_gpu(gpu, req.launch_cost_ns))


def _cpu(req: BackendRequest):
    from trtq.artifacts.io import validate_model
    from trtq.profile.cpu import CpuBackend
    from trtq.profile.harness import HarnessSettings

    return CpuBackend(validate_model(HarnessSettings, req.harness, "--repeats/--warmup"), seed=req.seed)


def _cuda(req: BackendRequest):
    from trtq.artifacts.io import validate_model
    from trtq.profile.cuda import CudaBackend
    from trtq.profile.harness import HarnessSettings

    return CudaBackend(
        validate_model(HarnessSettings, req.harness, "--repeats/--warmup"),
        seed=req.seed,
        cuda_graphs=bool(req.options.get("cuda_graphs", False)),
    )


def _aiconfigurator(req: BackendRequest):
    from trtq.errors import InputError
    from trtq.profile.aiconfigurator import AiconfiguratorBackend
    from trtq.registry import get_gpu

    if not req.gpu:
        raise InputError("the aiconfigurator backend needs --gpu (see `trtq gpus`)")
    return AiconfiguratorBackend(
        get_gpu(req.gpu),
        framework=req.options.get("framework"),
        version=req.options.get("framework_version"),
        systems_root=req.options.get("systems_root"),
    )


PROFILER_BACKENDS: dict[str, Callable[[BackendRequest], object]] = {
    "roofline": _roofline,
    "cpu": _cpu,
    "cuda": _cuda,
    "aiconfigurator": _aiconfigurator,
}


def make_backend(name: str, request: BackendRequest):
    try:
        factory = PROFILER_BACKENDS[name]
    except KeyError:
        raise UnknownNameError(f"unknown profiler backend {name!r}; known: {', '.join(PROFILER_BACKENDS)}") from None
    return factory(request)
