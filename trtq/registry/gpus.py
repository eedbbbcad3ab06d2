"""The GPU registry, read from profiles/gpus.yaml (data with a source per GPU)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field

from trtq.artifacts.io import StrictModel, read_structured, validate_model
from trtq.artifacts.plan import GpuFacts
from trtq.errors import UnknownNameError, UnsupportedError
from trtq.registry.formats import FORMATS, Format


def profiles_dir() -> Path:
    """The shipped data directory; TRTQ_PROFILES_DIR overrides it (e.g. in a container)."""
    override = os.environ.get("TRTQ_PROFILES_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "profiles"


class Achievable(StrictModel):
    compute: float = Field(gt=0, le=1)
    bandwidth: float = Field(gt=0, le=1)
    launch_cost_ns: float = Field(ge=0)
    source: str


class GpuSpec(GpuFacts):
    """A GPU of profiles/gpus.yaml: the facts a plan records (GpuFacts), and how trtq looks it up and models it."""

    aliases: list[str] = []
    achievable: Achievable | None = None
    # The system name of this GPU in aiconfigurator-core's measured tables (the aiconfigurator backend).
    aiconfigurator_system: str | None = None

    def facts(self) -> GpuFacts:
        """What a plan records of this GPU (a later edit of the registry leaves the plan's verdicts alone)."""
        return GpuFacts.model_validate(self.model_dump(include=set(GpuFacts.model_fields)))

    def supports(self, fmt: Format) -> bool:
        return self.sm >= fmt.min_sm and fmt.compute in self.peak_flops

    @property
    def formats(self) -> list[Format]:
        return [f for f in FORMATS.values() if self.supports(f)]

    def require(self, fmt: Format) -> None:
        if not self.supports(fmt):
            raise UnsupportedError(
                f"format {fmt.name} is not supported on {self.name} (sm{self.sm}): "
                f"it needs sm{fmt.min_sm}+; {self.name} runs {', '.join(f.name for f in self.formats)}"
            )


class _GpuFile(StrictModel):
    schema_version: int
    achievable_default: Achievable
    gpus: list[GpuSpec]


@functools.cache
def _load(path: str) -> tuple[GpuSpec, ...]:
    data = read_structured(path, "GPU registry")
    parsed: _GpuFile = validate_model(_GpuFile, data, path)
    if parsed.schema_version != 1:
        raise UnknownNameError(f"{path}: GPU registry schema_version {parsed.schema_version} not supported")
    return tuple(
        gpu if gpu.achievable else gpu.model_copy(update={"achievable": parsed.achievable_default})
        for gpu in parsed.gpus
    )


def list_gpus() -> list[GpuSpec]:
    return list(_load(str(profiles_dir() / "gpus.yaml")))


def get_gpu(name: str) -> GpuSpec:
    wanted = name.strip().lower()
    for gpu in list_gpus():
        if wanted == gpu.name.lower() or wanted in (a.lower() for a in gpu.aliases):
            return gpu
    raise UnknownNameError(f"unknown GPU {name!r}; known GPUs: {', '.join(g.name for g in list_gpus())}")
