"""The runtime capability table (profiles/runtimes.yaml) and the one gate every format goes through.

A runtime is `NAME@VERSION`: `trtllm@1.2` (TensorRT-LLM 1.2, PyTorch backend, the default: the
release docker/ pins), `trtllm-engine@1.2` (the legacy TensorRT engine path, trtllm-build, INT8
SmoothQuant), `trtllm@main` (no trtllm-build any more). `format_refusal` is the single answer to
"may this format be planned / quantized / built for this GPU under this runtime": the planner's
candidate selection, the profile stage's default formats, quantize, build and `trtq formats` all
call it.
"""

from __future__ import annotations

import functools
from typing import Literal

from trtq.artifacts.io import StrictModel, read_structured, validate_model
from trtq.errors import UnknownNameError, UnsupportedError
from trtq.registry.formats import FORMATS, Format
from trtq.registry.gpus import GpuSpec, profiles_dir


class FormatSupport(StrictModel):
    archs: list[str]  # architectures that run it; [] = none
    source: str
    reason: str | None = None  # why an architecture outside `archs` cannot
    note: str | None = None


class KvCacheSupport(StrictModel):
    archs: list[str]
    source: str
    # Coupling: at least one quantized layer must be in one of these formats.
    requires_layer_formats: list[str] = []
    reason: str | None = None


class ModelFamily(StrictModel):
    name: str  # the row of the doc's model matrix
    architectures: list[str]  # Hugging Face `architectures` it covers
    formats: list[str]  # formats the matrix marks supported for it
    kv_cache: list[str]
    source: str


class Runtime(StrictModel):
    name: str
    product: str
    version: str
    release: str
    backend: Literal["pytorch", "engine"]
    engine_runtime: str | None = None  # the runtime `--backend engine` builds for; None = no trtllm-build
    no_engine_reason: str | None = None
    serve: str
    source: str
    formats: dict[str, FormatSupport]
    kv_cache: dict[str, KvCacheSupport]
    model_families: list[ModelFamily] = []

    def family_for(self, architecture: str | None) -> ModelFamily | None:
        for family in self.model_families:
            if architecture in family.architectures:
                return family
        return None


class _RuntimeFile(StrictModel):
    schema_version: int
    default: str
    architectures: dict[str, list[int]]
    sources: dict[str, str] = {}
    runtimes: list[Runtime]


@functools.cache
def _load(path: str) -> _RuntimeFile:
    parsed: _RuntimeFile = validate_model(_RuntimeFile, read_structured(path, "runtime table"), path)
    if parsed.schema_version != 1:
        raise UnknownNameError(f"{path}: runtime table schema_version {parsed.schema_version} not supported")
    names = [r.name for r in parsed.runtimes]
    if parsed.default not in names or len(set(names)) != len(names):
        raise UnknownNameError(f"{path}: default {parsed.default!r} must name one of the runtimes, each once")
    known_arch = set(parsed.architectures)
    for runtime in parsed.runtimes:
        for where, archs in [(f"format {n}", s.archs) for n, s in runtime.formats.items()] + [
            (f"KV cache {n}", s.archs) for n, s in runtime.kv_cache.items()
        ]:
            unknown = sorted(set(archs) - known_arch)
            if unknown:
                raise UnknownNameError(f"{path}: {runtime.name} {where}: unknown architecture {unknown[0]!r}")
        if runtime.engine_runtime is not None and runtime.engine_runtime not in names:
            raise UnknownNameError(
                f"{path}: {runtime.name}: engine_runtime {runtime.engine_runtime!r} is not a runtime"
            )
    return parsed


def runtime_table() -> _RuntimeFile:
    return _load(str(profiles_dir() / "runtimes.yaml"))


def list_runtimes() -> list[Runtime]:
    return list(runtime_table().runtimes)


def default_runtime_name() -> str:
    return runtime_table().default


def get_runtime(spec: str | None = None) -> Runtime:
    """`trtllm@1.2`, `trtllm-engine@1.2`, ...; None -> the default (the release docker/ pins)."""
    table = runtime_table()
    if spec is not None and not spec.strip():  # `--runtime ""` is a mistake, not a request for the default
        raise UnknownNameError(f"empty runtime name; known runtimes: {', '.join(r.name for r in table.runtimes)}")
    wanted = (spec or table.default).strip().lower()
    for runtime in table.runtimes:
        if runtime.name.lower() == wanted:
            return runtime
    raise UnknownNameError(f"unknown runtime {spec!r}; known runtimes: {', '.join(r.name for r in table.runtimes)}")


def architecture_of(gpu: GpuSpec) -> str | None:
    for arch, sms in runtime_table().architectures.items():
        if gpu.sm in sms:
            return arch
    return None


def _name(fmt: Format | str) -> str:
    return fmt.name if isinstance(fmt, Format) else fmt


def format_refusal(gpu: GpuSpec, fmt: Format | str, runtime: Runtime) -> str | None:
    """THE gate: None when `runtime` runs `fmt` on `gpu`, else why not (one clause, no GPU name).

    Two conditions, both from data: the runtime's table lists the GPU's architecture for the
    format (profiles/runtimes.yaml), and the GPU has the tensor-core rate the format computes at
    (profiles/gpus.yaml peak_flops).
    """
    name = _name(fmt)
    support = runtime.formats.get(name)
    if support is None:
        return f"{runtime.name}'s table has no entry for {name} (profiles/runtimes.yaml)"
    arch = architecture_of(gpu)
    if arch is None:
        return f"sm{gpu.sm} is not an architecture {runtime.name} supports"
    if arch not in support.archs:
        runs_on = ", ".join(support.archs) or "no architecture"
        return support.reason or f"{runtime.name} runs {name} on {runs_on}, not {arch}"
    registered = FORMATS.get(name)
    if registered is not None and registered.compute not in gpu.peak_flops:
        return f"{gpu.name} has no {registered.compute} tensor-core rate in profiles/gpus.yaml"
    return None


def require_format(gpu: GpuSpec, fmt: Format | str, runtime: Runtime) -> None:
    if _name(fmt) not in FORMATS:
        from trtq.registry.formats import get_format

        get_format(_name(fmt))  # an unknown name is refused as such, not as "unsupported"
    reason = format_refusal(gpu, fmt, runtime)
    if reason is not None:
        raise UnsupportedError(
            f"format {_name(fmt)} is not supported on {gpu.name} (sm{gpu.sm}) by {runtime.name}: {reason}"
        )


def plannable_formats(gpu: GpuSpec, runtime: Runtime, spec: str | None = None) -> list[Format]:
    """Every registered format the gate passes, or exactly `spec` (each checked)."""
    from trtq.registry.formats import parse_formats

    fmts = parse_formats(spec)
    if spec:
        for f in fmts:
            require_format(gpu, f, runtime)
        return fmts
    return [f for f in fmts if format_refusal(gpu, f, runtime) is None]


def unexported_formats(gpu: GpuSpec, runtime: Runtime) -> list[Format]:
    """Formats the runtime runs on this GPU that trtq cannot quantize and export (the planner's default leaves them out)."""
    return [f for f in FORMATS.values() if f.export_refusal and format_refusal(gpu, f, runtime) is None]


def union_formats(gpu: GpuSpec) -> list[Format]:
    """Every registered format some runtime in the table runs on this GPU (profile's default set)."""
    return [f for f in FORMATS.values() if any(format_refusal(gpu, f, r) is None for r in list_runtimes())]


def kv_cache_refusal(gpu: GpuSpec, kv_format: str, runtime: Runtime, layer_formats: set[str]) -> str | None:
    """None when the runtime runs this KV-cache format on the GPU with these layer formats."""
    support = runtime.kv_cache.get(kv_format)
    if support is None:
        known = ", ".join(runtime.kv_cache) or "none"
        return f"{runtime.name} has no {kv_format} KV cache (it has: {known})"
    arch = architecture_of(gpu)
    if arch not in support.archs:
        return support.reason or f"{runtime.name} runs a {kv_format} KV cache on {', '.join(support.archs)}, not {arch}"
    if support.requires_layer_formats and not (set(support.requires_layer_formats) & layer_formats):
        return (support.reason or "coupling rule") + f": needs a layer in {' or '.join(support.requires_layer_formats)}"
    return None


def require_kv_cache(gpu: GpuSpec, kv_format: str, runtime: Runtime, layer_formats: set[str]) -> None:
    reason = kv_cache_refusal(gpu, kv_format, runtime, layer_formats)
    if reason is not None:
        raise UnsupportedError(
            f"{kv_format} KV cache is not supported on {gpu.name} (sm{gpu.sm}) by {runtime.name}: {reason}"
        )


def family_advisories(runtime: Runtime, architecture: str | None, formats: list[str]) -> list[str]:
    """Formats outside the doc's model matrix for this model family (advisory: the matrix lists what NVIDIA
    validated per model; the loader itself is per-Linear and does not refuse them)."""
    family = runtime.family_for(architecture)
    if family is None:
        return []
    outside = [f for f in formats if f != "bf16" and f not in family.formats]
    if not outside:
        return []
    return [
        f"{', '.join(outside)} not in {runtime.name}'s model support matrix for {family.name} "
        f"({family.source}): runs through the per-layer loader, not validated by NVIDIA for this family"
    ]


def check_plan_runtime(plan_runtime: str | None, runtime: Runtime, what: str) -> None:
    """A plan (or checkpoint) made for another runtime is refused in one line."""
    if plan_runtime is not None and plan_runtime != runtime.name:
        raise UnsupportedError(
            f"{what} was planned for runtime {plan_runtime}, not {runtime.name}: re-plan with "
            f"--runtime {runtime.name}, or pass --runtime {plan_runtime}"
        )


def resolve_runtime(requested: str | None, recorded: str | None, what: str) -> Runtime:
    """--runtime if given (refusing a plan recorded for another), else the plan's, else the default."""
    if requested is None:
        return get_runtime(recorded)
    runtime = get_runtime(requested)
    check_plan_runtime(recorded, runtime, what)
    return runtime


def format_rows(gpu: GpuSpec, runtime: Runtime, architecture: str | None = None) -> list[dict]:
    """`trtq formats --gpu G --runtime R`: one row per format in the table or the registry, with why."""
    names = list(dict.fromkeys([*FORMATS, *runtime.formats]))
    rows = []
    advisories = {}
    family = runtime.family_for(architecture)
    for name in names:
        if name not in FORMATS:
            rows.append(
                {
                    "format": name,
                    "plannable": False,
                    "why": "in the runtime table, not in this trtq's format registry yet",
                    "source": runtime.formats[name].source,
                }
            )
            continue
        reason = format_refusal(gpu, name, runtime)
        support = runtime.formats.get(name)
        why = reason or (
            support.note if support and support.note else f"{runtime.name} runs it on {architecture_of(gpu)}"
        )
        if reason is None and family is not None and name != "bf16" and name not in family.formats:
            advisories[name] = f"not in the model matrix for {family.name} (advisory)"
            why += f"; {advisories[name]}"
        rows.append(
            {
                "format": name,
                "plannable": reason is None,
                "why": why,
                "source": support.source if support else "profiles/runtimes.yaml",
            }
        )
    for kv, kv_support in runtime.kv_cache.items():
        reason = kv_cache_refusal(gpu, kv, runtime, set(kv_support.requires_layer_formats) or {"bf16"})
        rows.append(
            {
                "format": f"kv:{kv}",
                "plannable": reason is None,
                "why": reason
                or (
                    "needs a layer in " + " or ".join(kv_support.requires_layer_formats)
                    if kv_support.requires_layer_formats
                    else f"{runtime.name} runs it here"
                ),
                "source": kv_support.source,
            }
        )
    return rows
