"""Where and in what precision a model runs: `--device` and `--dtype`, declared once for every stage.

`DeviceSettings` declares the two fields; `SensitivityRequest`, `QuantizeRequest` and `EvalRequest`
inherit them, so their options are generated from one declaration. The stages call
`resolve_placement(request.device, request.dtype)` before any model loads, so `--device cuda` on a
machine without CUDA, or a CUDA index past the visible GPUs, is one line and exit 2, not a
traceback half way through a load. Nothing here imports torch at module level (`trtq --help`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import field_validator

from trtq.errors import InputError, UnsupportedError
from trtq.settings import Request, add_options, setting

DEVICE_CHOICES = ("cpu", "cuda", "cuda:N")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")
DEFAULT_DEVICE = "cpu"
DEFAULT_DTYPE = "float32"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def _device_spec(text: str) -> str:
    value = text.strip().lower()
    if value == "cpu" or _CUDA.match(value):
        return value
    raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda or cuda:N)")


class DeviceSettings(Request):
    """Where a model runs and in what precision: the same two settings for every stage that loads one."""

    device: str = setting(DEFAULT_DEVICE, "where the model runs", metavar="|".join(DEVICE_CHOICES), parse=_device_spec)
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        DEFAULT_DTYPE, "the model's weights and activations while it runs"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        try:
            return _device_spec(device)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--device: {exc}") from None


def add_device_options(parser: argparse._ActionsContainer) -> None:
    """--device and --dtype alone (the requests that inherit `DeviceSettings` get them with their own fields)."""
    add_options(parser, DeviceSettings)


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda:N"
    dtype: str  # a torch dtype name
    device_name: str  # the CPU or the GPU's name, for artifacts' metadata

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def as_settings(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype, "device_name": self.device_name}


def resolve_placement(
    device: str = DEFAULT_DEVICE,
    dtype: str = DEFAULT_DTYPE,
    *,
    cuda_available: bool | None = None,
    cuda_count: int | None = None,
) -> Placement:
    """Check the request against this machine; one line when it cannot be met."""
    import platform

    if dtype not in DTYPE_CHOICES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    device = device.strip().lower()
    if device == "cpu":
        return Placement("cpu", dtype, platform.processor() or platform.machine() or "cpu")
    match = _CUDA.match(device)
    if not match:
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    import torch

    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not available:
        raise UnsupportedError(
            f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu"
        )
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    index = int(match.group(1) or 0)
    if index >= count:
        raise UnsupportedError(f"--device {device}: this machine has {count} CUDA device(s) (0..{count - 1})")
    if dtype == "bfloat16" and cuda_available is None and not torch.cuda.is_bf16_supported():
        raise UnsupportedError(f"--device {device} has no bfloat16 (before Ampere): use --dtype float16 or float32")

    def name(i: int) -> str:
        return torch.cuda.get_device_name(i) if cuda_available is None else f"cuda:{i}"

    if match.group(1) is None and count > 1:
        # Bare `cuda` with several GPUs visible: a model that does not fit the first is spread over them all
        # (load_pretrained, accelerate's device_map); `cuda:N` keeps it on that one GPU.
        names = [name(i) for i in range(count)]
        described = f"{count} x {names[0]}" if len(set(names)) == 1 else " + ".join(names)
        return Placement("cuda", dtype, described)
    return Placement(f"cuda:{index}", dtype, name(index))


def placement_of(model) -> Placement:
    """The placement of a model already loaded (a caller's own): its first parameter's device and dtype."""
    parameter = next(model.parameters())
    device = "cpu" if parameter.device.type == "cpu" else f"cuda:{parameter.device.index or 0}"
    return resolve_placement(device, str(parameter.dtype).removeprefix("torch."))


_GIB = 1024**3
_ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def available_memory(device: str) -> int:
    """Bytes free for a model now: the host's available RAM for "cpu", the GPU's free memory for "cuda:N",
    every visible GPU's together for a bare "cuda" (a model spread over them)."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return sum(gpu_free_memory() if device == "cuda" else [gpu_free_memory(device)])


def gpu_free_memory(device: str | None = None):
    """Free bytes of `device` ("cuda:N"), or a list with each visible GPU's when None."""
    import torch

    if device is not None:
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return [int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())]


# Of each GPU's free memory, what a spread model's weights may take: the rest is for activations,
# gradients and the CUDA context (accelerate's max_memory).
SPREAD_WEIGHT_SHARE = 0.8


def gpu_memory_map(need: int, free: list[int], share: float = SPREAD_WEIGHT_SHARE) -> dict[int, int] | None:
    """Where `need` bytes of weights go on the visible GPUs (`free`: each one's free bytes): None when the
    first GPU holds them within `share` of its free memory (the model stays on one device), else
    accelerate's `max_memory` per GPU for device_map="auto" (each up to `share` of its free memory).
    Refused in one line when all of them together cannot hold the weights."""
    budget = [int(f * share) for f in free]
    if not budget or need <= budget[0]:
        return None
    if need > sum(budget):
        raise UnsupportedError(
            f"its weights need {need / _GIB:.1f} GiB and the {len(free)} visible GPU(s) have "
            f"{sum(budget) / _GIB:.1f} GiB for weights ({share:.0%} of {sum(free) / _GIB:.1f} GiB free): "
            "use more GPUs, --dtype bfloat16, or sensitivity --sequential (one block at a time)"
        )
    return dict(enumerate(budget))


def require_memory(
    model: str, parameters: int | None, dtype: str, device: str, *, available: dict[str, int] | None = None
) -> None:
    """Refuse, in one line, to load `parameters` weights in `dtype` where they cannot fit.

    The weights are read on the host first and then moved, so the host needs them in `dtype` whatever
    the device; a CUDA device needs them too. Only the weights are counted (activations come on top):
    a refusal here is certain, a pass is not a promise. `available`: bytes per device (tests)."""
    if not parameters:
        return
    need = parameters * _ELEMENT_BYTES.get(dtype, 4)
    for where in ("cpu",) if device == "cpu" else ("cpu", device):
        have = (available or {}).get(where)
        have = available_memory(where) if have is None else have
        if need > have:
            place = "this machine's RAM" if where == "cpu" else where
            hint = ("--dtype bfloat16" if dtype == "float32" else "a machine with more memory") + (
                ", or sensitivity --sequential (output, fisher, hessian: one block at a time; weight: one tensor)"
                if where == "cpu"
                else ", or more or larger GPUs (a bare --device cuda spreads a model over every visible GPU)"
            )
            raise UnsupportedError(
                f"{model}: its weights need {need / _GIB:.1f} GiB in {dtype} ({parameters:,} parameters) and "
                f"{place} has {have / _GIB:.1f} GiB available: not loading it (use {hint})"
            )
