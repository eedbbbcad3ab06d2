"""Read a ModelOpt-exported checkpoint's own quantization files and name the formats in it.

`trtq quantize` writes `engines/NAME/` with `hf/` (ModelOpt `export_hf_checkpoint`:
`hf_quant_config.json`) and `trtllm/` (`export_tensorrt_llm_checkpoint`: `config.json` with a
`quantization` section and `mapping`, plus `quant_cfg.json` when mixed precision). A bare
TensorRT-LLM checkpoint directory or a bare unified HF checkpoint directory is accepted too.

The quant_algo names are TensorRT-LLM's QuantAlgo values as ModelOpt 0.47 writes them
(modelopt/torch/export/quant_utils.py, process_layer_quant_config): FP8, W8A8_SQ_PER_CHANNEL,
W4A16_AWQ (with group_size), W4A8_AWQ (with group_size), NVFP4 (group_size 16), and
MIXED_PRECISION at checkpoint level with a per-layer `quantized_layers` map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.artifacts.build import CheckpointSummary, LayerFormat
from trtq.artifacts.io import sha256_file
from trtq.errors import ArtifactError, InputError, UnsupportedError
from trtq.formats import checkpoint_algo_formats, format_for_checkpoint_algo
from trtq.registry.formats import get_format

# TensorRT-LLM QuantAlgo -> trtq format: each format names its algorithms (Format.checkpoint_algos, the one map).
MIXED_PRECISION = "MIXED_PRECISION"


@dataclass
class QuantSection:
    """One checkpoint file's view: checkpoint-level algo plus per-layer algos."""

    source: Path
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # only for MIXED_PRECISION
    group_size: int | None = None
    exclude_modules: list[str] = field(default_factory=list)

    def formats(self) -> dict[str, set[int | None]]:
        """trtq format -> group sizes seen (None where the format has no groups)."""
        found: dict[str, set[int | None]] = {}
        if self.quant_algo == MIXED_PRECISION:
            if not self.layers:
                raise ArtifactError(f"{self.source}: quant_algo MIXED_PRECISION but no quantized_layers")
            for name, cfg in self.layers.items():
                if not isinstance(cfg, dict) or "quant_algo" not in cfg:
                    raise ArtifactError(f"{self.source}: quantized_layers[{name!r}] has no quant_algo")
                fmt = algo_to_format(cfg["quant_algo"], self.source, name)
                found.setdefault(fmt, set()).add(_group(cfg, self.source, name))
        elif self.quant_algo is not None:
            fmt = algo_to_format(self.quant_algo, self.source, "checkpoint")
            found.setdefault(fmt, set()).add(self.group_size)
        return found


def algo_to_format(algo: Any, source: Path, where: str) -> str:
    fmt = format_for_checkpoint_algo(algo)
    if fmt is not None:
        return fmt.name
    raise UnsupportedError(
        f"{source}: {where} uses quant_algo {algo!r}, which trtq does not build; "
        f"known: {', '.join(sorted(checkpoint_algo_formats()))}"
    )


def _group(cfg: dict, source: Path, name: str) -> int | None:
    value = cfg.get("group_size")
    if value is None:
        return None
    if not isinstance(value, int) or value <= 0:
        raise ArtifactError(f"{source}: {name}: group_size {value!r} is not a positive integer")
    return value


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {what} must be a JSON object")
    return data


def _section(data: dict, source: Path) -> QuantSection:
    layers = data.get("quantized_layers") or {}
    if not isinstance(layers, dict):
        raise ArtifactError(f"{source}: quantized_layers must be an object")
    exclude = data.get("exclude_modules") or []
    return QuantSection(
        source=source,
        quant_algo=data.get("quant_algo"),
        kv_cache_quant_algo=data.get("kv_cache_quant_algo"),
        layers=layers,
        group_size=_group(data, source, "checkpoint"),
        exclude_modules=list(exclude) if isinstance(exclude, list) else [],
    )


@dataclass
class Checkpoint:
    path: Path
    hf_dir: Path | None
    trtllm_dir: Path | None
    hf: QuantSection | None
    trtllm: QuantSection | None
    architecture: str | None
    dtype: str | None
    tp_size: int
    pp_size: int
    plan_path: Path | None
    formats: dict[str, set[int | None]]
    plan_runtime: str | None = None  # the runtime plan.yaml was made for (None: not recorded / no plan)
    model_name: str | None = None  # plan.yaml's model, for trtllm-bench --model

    @property
    def primary(self) -> QuantSection | None:
        """The TensorRT-LLM export's quantization, else the HF one's; None for an unquantized checkpoint."""
        return self.trtllm or self.hf

    @property
    def kv_cache_quant_algo(self) -> str | None:
        return self.primary.kv_cache_quant_algo if self.primary else None

    @property
    def format_names(self) -> list[str]:
        return sorted(self.formats)

    def rank_files(self) -> list[Path]:
        return sorted(self.trtllm_dir.glob("rank*.safetensors")) if self.trtllm_dir else []

    def summary(self) -> CheckpointSummary:
        section = self.primary
        layers = []
        if section is not None and section.quant_algo == MIXED_PRECISION:
            for name, cfg in sorted(section.layers.items()):
                layers.append(
                    LayerFormat(
                        layer=name,
                        quant_algo=cfg["quant_algo"],
                        format=algo_to_format(cfg["quant_algo"], self.path, name),
                        group_size=cfg.get("group_size"),
                    )
                )
        return CheckpointSummary(
            path=str(self.path),
            hf_dir=str(self.hf_dir) if self.hf_dir else None,
            trtllm_dir=str(self.trtllm_dir) if self.trtllm_dir else None,
            architecture=self.architecture,
            dtype=self.dtype,
            quant_algo=section.quant_algo if section else None,
            kv_cache_quant_algo=self.kv_cache_quant_algo,
            formats=self.format_names,
            layers=layers,
            tp_size=self.tp_size,
            pp_size=self.pp_size,
            plan=str(self.plan_path) if self.plan_path else None,
            plan_sha256=sha256_file(self.plan_path) if self.plan_path else None,
        )


def _is_trtllm_dir(d: Path) -> bool:
    if (d / "quant_cfg.json").is_file():
        return True
    config = d / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "mapping" in data and "quantization" in data


def locate(path: str | Path) -> tuple[Path, Path | None, Path | None]:
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"checkpoint directory not found: {root}")
    hf_dir = (
        root / "hf"
        if (root / "hf" / "hf_quant_config.json").is_file() or (root / "hf" / "config.json").is_file()
        else None
    )
    trtllm_dir = root / "trtllm" if (root / "trtllm").is_dir() and _is_trtllm_dir(root / "trtllm") else None
    if hf_dir is None and trtllm_dir is None:
        if _is_trtllm_dir(root):
            trtllm_dir = root
        elif (root / "hf_quant_config.json").is_file() or (root / "config.json").is_file():
            hf_dir = root
        else:
            raise InputError(
                f"{root}: not a trtq quantize output (no hf/ or trtllm/), nor a TensorRT-LLM or "
                "Hugging Face checkpoint directory"
            )
    return root, hf_dir, trtllm_dir


def read_checkpoint(path: str | Path) -> Checkpoint:
    root, hf_dir, trtllm_dir = locate(path)
    architecture = dtype = None
    tp = pp = 1
    trtllm_section = hf_section = None
    if trtllm_dir is not None:
        config_path = trtllm_dir / "config.json"
        config = _read_json(config_path, "TensorRT-LLM checkpoint config")
        architecture = config.get("architecture")
        dtype = config.get("dtype")
        mapping = config.get("mapping") or {}
        tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
        world = int(mapping.get("world_size", tp * pp))
        if world != tp * pp:
            raise ArtifactError(f"{config_path}: mapping world_size {world} != tp_size {tp} x pp_size {pp}")
        quantization = config.get("quantization") or {}
        if not isinstance(quantization, dict):
            raise ArtifactError(f"{config_path}: quantization must be an object")
        trtllm_section = _section(quantization, config_path)
        if trtllm_section.quant_algo == MIXED_PRECISION:
            quant_cfg = trtllm_dir / "quant_cfg.json"
            trtllm_section = _section(_read_json(quant_cfg, "mixed-precision quant_cfg.json"), quant_cfg)
    if hf_dir is not None:
        hf_quant = hf_dir / "hf_quant_config.json"
        if hf_quant.is_file():
            data = _read_json(hf_quant, "hf_quant_config.json")
            quantization = data.get("quantization")
            if not isinstance(quantization, dict):
                raise ArtifactError(f"{hf_quant}: no 'quantization' object (not a ModelOpt export)")
            hf_section = _section(quantization, hf_quant)
        else:
            hf_section = QuantSection(source=hf_dir / "config.json", quant_algo=None, kv_cache_quant_algo=None)
        if architecture is None and (hf_dir / "config.json").is_file():
            hf_config = _read_json(hf_dir / "config.json", "Hugging Face config")
            archs = hf_config.get("architectures") or []
            architecture = archs[0] if archs else None
            dtype = hf_config.get("torch_dtype") or hf_config.get("dtype")

    formats: dict[str, set[int | None]] = {}
    views = [s for s in (trtllm_section, hf_section) if s is not None]
    seen = [s.formats() for s in views]
    if len(seen) == 2 and set(seen[0]) != set(seen[1]):
        raise ArtifactError(
            f"{root}: the two exports disagree: {views[0].source.name} has "
            f"{', '.join(sorted(seen[0])) or 'no quantization'}, {views[1].source.name} has "
            f"{', '.join(sorted(seen[1])) or 'no quantization'}"
        )
    for found in seen:
        for fmt, groups in found.items():
            formats.setdefault(fmt, set()).update(groups)
    for fmt, groups in formats.items():
        allowed = tuple(sorted(get_format(fmt).runtime_group_sizes))
        bad = sorted(g for g in groups if allowed and g is not None and g not in allowed)
        if bad:
            raise UnsupportedError(
                f"{root}: {fmt} with group size {bad[0]} has no TensorRT-LLM kernel "
                f"(group sizes {'/'.join(map(str, allowed))})"
            )
    # Unquantized layers (lm_head at least: trtq keeps it bf16) run in the model dtype.
    formats.setdefault("bf16", {None})

    plan_path = root / "plan.yaml" if (root / "plan.yaml").is_file() else None
    checkpoint = Checkpoint(
        root, hf_dir, trtllm_dir, hf_section, trtllm_section, architecture, dtype, tp, pp, plan_path, formats
    )
    if plan_path is not None:
        plan = _check_against_plan(checkpoint, plan_path)
        checkpoint.plan_runtime, checkpoint.model_name = plan.runtime, plan.model
    return checkpoint


def _check_against_plan(checkpoint: Checkpoint, plan_path: Path):
    from trtq.artifacts.io import load_artifact
    from trtq.artifacts.plan import Plan

    plan = load_artifact(plan_path, Plan)
    planned = {fmt for fmt, _ in plan.layer_formats().values()} - {"bf16"}
    present = set(checkpoint.formats) - {"bf16"}
    if planned != present:
        raise ArtifactError(
            f"{checkpoint.path}: plan.yaml chose {', '.join(sorted(planned)) or 'bf16 only'} but the "
            f"checkpoint holds {', '.join(sorted(present)) or 'no quantized layers'}: re-run trtq quantize"
        )
    return plan
