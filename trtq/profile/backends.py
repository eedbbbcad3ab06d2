"""The profiler backend registry: every backend, registered here by name.

Each factory takes the parsed profile request and returns a backend object with
`name`, `launch_cost_ns`, `device_info()`, `settings()` and `profile(cases, on_row)`.
Factories import their heavy dependencies themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trtq.errors import UnknownNameError


@dataclass(frozen=True)
class BackendRequest:
    gpu: str | None
    launch_cost_ns: float | None
    harness: dict
    seed: int


def _roofline(req: BackendRequest):
    from trtq.errors import InputError
    from trtq.profile.roofline import RooflineBackend, RooflineParams
    from trtq.registry import get_gpu

    if not req.gpu:
        raise InputError("the roofline backend needs --gpu (see `trtq gpus`)")
    gpu = get_gpu(req.gpu)
    return RooflineBackend(gpu, RooflineParams.for_gpu(gpu, req.launch_cost_ns))


def _cpu(req: BackendRequest):
    from trtq.profile.cpu import CpuBackend
    from trtq.profile.harness import HarnessSettings

    return CpuBackend(HarnessSettings(**req.harness), seed=req.seed)


PROFILER_BACKENDS: dict[str, Callable[[BackendRequest], object]] = {
    "roofline": _roofline,
    "cpu": _cpu,
}


def make_backend(name: str, request: BackendRequest):
    try:
        factory = PROFILER_BACKENDS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown profiler backend {name!r}; known: {', '.join(PROFILER_BACKENDS)}"
        ) from None
    return factory(request)
