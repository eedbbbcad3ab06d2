"""Block-sequential sensitivity: one decoder block in memory at a time, resumable after a kill.

The approach of GPTQ and llm-compressor's sequential pipeline. The model is built on the meta
device (accelerate's init_empty_weights: no memory); the embeddings are read from the
safetensors files tensor by tensor (safetensors' safe_open), the calibration windows are run up
to the first block, and the first block's inputs (hidden states and the keyword arguments the
model gives every block: rotary position embeddings, attention mask) are kept. Then, per block:
its tensors are read, each layer is scored on the block's inputs (trtq.sensitivity.output: the
layer-wise Hessian objective, two passes), the block's outputs become the next block's inputs,
and the block goes back to the meta device. Peak memory is one block, the embeddings and the
cached hidden states ([windows, seq_len, hidden] float32), not the model.

After each block the rows so far and the next block's inputs are written to a checkpoint
directory, atomically (temporary file, fsync, rename; the state file last, as the commit
point): a run killed at any moment, SIGKILL included, resumes from the last finished block and
gives the same table as an uninterrupted run. The directory records what it was computed from;
a resume with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trtq.artifacts.io import atomic_path, atomic_write_text
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.sensitivity import SensitivityRow
from trtq.errors import InputError, UnsupportedError
from trtq.model.memory import release_freed_memory
from trtq.registry.formats import Format
from trtq.sensitivity.operands import install_hooks
from trtq.sensitivity.output import OutputScores

STATE_FILE = "state.json"


def _hidden_file(block: int) -> str:
    return f"hidden-{block:05d}.safetensors"  # the inputs of `block`


def _rows_file(block: int) -> str:
    return f"rows-{block:05d}.json"  # every row of the blocks before `block`


CHECKPOINT_VERSION = 1


class _FirstBlockReached(Exception):
    """Raised by the hook on block 0 once it has the block's inputs: nothing after it needs to run."""


@dataclass
class SequentialRun:
    rows: list[SensitivityRow]
    blocks: int
    resumed_from: int  # the first block this process computed (0: a fresh run)


class TensorIndex:
    """Tensor name -> safetensors file, for a directory's *.safetensors (the index file when there is one)."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        index_file = directory / "model.safetensors.index.json"
        if index_file.is_file():
            mapping = json.loads(index_file.read_text())["weight_map"]
            self.files = {name: directory / file for name, file in mapping.items()}
        else:
            self.files = {}
            for path in sorted(directory.glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as handle:
                    self.files.update({name: path for name in handle.keys()})

    def tensor(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.files[name]), framework="pt", device="cpu") as handle:
            return handle.get_tensor(name)

    def parameter(self, name: str, layout=None) -> torch.Tensor:
        """A parameter by its transformers 5 name, or assembled from the per-expert tensors checkpoints hold."""
        if name in self.files:
            return self.tensor(name)
        if layout is not None:
            mlp = f".{layout.experts_path.rsplit('.', 1)[0]}."
            legacy = name.replace(mlp, f".{layout.checkpoint_mlp}.", 1)
            if legacy in self.files:
                return self.tensor(legacy)
            gate, up, down = layout.checkpoint_expert_names
            experts = f".{layout.experts_path}."
            base = name.replace(experts, f".{layout.checkpoint_mlp}.experts.", 1)
            leaf = name.rsplit(".", 1)[-1]
            root = base.rsplit(".", 1)[0]
            if experts in name and leaf in ("gate_up_proj", "down_proj"):
                parts = []
                e = 0
                while f"{root}.{e}.{down}.weight" in self.files:
                    if leaf == "gate_up_proj":
                        parts.append(
                            torch.cat(
                                [self.tensor(f"{root}.{e}.{gate}.weight"), self.tensor(f"{root}.{e}.{up}.weight")]
                            )
                        )
                    else:
                        parts.append(self.tensor(f"{root}.{e}.{down}.weight"))
                    e += 1
                if parts:
                    return torch.stack(parts)
        raise InputError(f"the model's safetensors lack {name}")

    def load(self, module: torch.nn.Module, prefix: str, device: str, dtype: torch.dtype, layout=None) -> None:
        """Every parameter of `module` (named `prefix` + its name in the files), read one tensor at a time;
        `layout` (the family's MoeLayout) maps per-expert checkpoint tensors onto fused expert parameters."""
        from accelerate.utils import set_module_tensor_to_device

        for name, _ in list(module.named_parameters()):
            set_module_tensor_to_device(
                module, name, device, value=self.parameter(f"{prefix}{name}", layout), dtype=dtype
            )


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _save_hidden(directory: Path, block: int, hidden: list[torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(directory / _hidden_file(block)) as tmp:
        save_file({f"window.{i}": h.contiguous().cpu() for i, h in enumerate(hidden)}, str(tmp))


def _load_hidden(directory: Path, block: int, windows: int, device: str) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / _hidden_file(block)), device="cpu")
    return [tensors[f"window.{i}"].to(device) for i in range(windows)]


def _to(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def _sequential_adapter(resolved, graph: LayerGraph):
    """The family adapter a block-sequential pass reads the blocks by; refused without one, or with lm_head."""
    from trtq.model.families import adapter_for

    adapter = adapter_for(resolved.config)
    if adapter is None:
        raise UnsupportedError(
            f"{resolved.name}: block-sequential sensitivity needs a family adapter "
            f"(model_type {resolved.config.get('model_type')!r} has none)"
        )
    if any(layer.block is None for layer in graph.layers):
        raise InputError("block-sequential sensitivity scores the decoder blocks only: drop --include-lm-head")
    return adapter


def sequential_output_rows(
    resolved,
    graph: LayerGraph,
    formats: list[Format],
    batches: torch.Tensor,
    *,
    checkpoint_dir: Path,
    settings: dict[str, Any],
    device: str = "cpu",
    dtype: str = "float32",
    progress: Callable[[int, int, bool], None] | None = None,
) -> SequentialRun:
    """Layer-output Omega for every layer of `graph`, one decoder block at a time (see the module doc)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from trtq.model.zoo import hf_config, weights_directory

    adapter = _sequential_adapter(resolved, graph)
    torch_dtype = getattr(torch, dtype)
    index = TensorIndex(weights_directory(resolved))
    config = hf_config(resolved)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.eval()
    blocks = model.get_submodule(adapter.block_path)
    checkpoint_dir = Path(checkpoint_dir)
    fingerprint = _fingerprint(
        {
            **settings,
            "version": CHECKPOINT_VERSION,
            "model": resolved.name,
            "batches": hashlib.sha256(batches.cpu().numpy().tobytes()).hexdigest(),
        }
    )
    state_path = checkpoint_dir / STATE_FILE
    start, rows = 0, []
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != fingerprint:
            raise InputError(
                f"{checkpoint_dir} holds a partial run with other settings or inputs: "
                "remove it, or give the settings it was started with"
            )
        start = int(state["next_block"])
        rows = [SensitivityRow.model_validate(r) for r in json.loads((checkpoint_dir / _rows_file(start)).read_text())]

    # The first block's keyword inputs (and, on a fresh run, its hidden states) from the embeddings alone.
    embeddings = model.get_input_embeddings()
    embed_name = next(n for n, m in model.named_modules() if m is embeddings)
    index.load(embeddings, f"{embed_name}.", device, torch_dtype)
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def catch(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden.detach(), {k: v for k, v in kwargs.items() if k not in ("hidden_states",)}))
        raise _FirstBlockReached

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids.reshape(1, -1).to(device), use_cache=False)
                except _FirstBlockReached:
                    pass
    finally:
        handle.remove()
    embeddings.to("meta")
    block_kwargs = [_to(kwargs, device) for _, kwargs in captured]
    hidden = [h for h, _ in captured] if start == 0 else _load_hidden(checkpoint_dir, start, len(captured), device)
    captured.clear()  # the hidden states live on in `hidden` alone
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    for b in range(start, len(blocks)):
        block = blocks[b]
        prefix = f"{adapter.block_path}.{b}."
        index.load(block, prefix, device, torch_dtype, adapter.moe)
        modules = {f"{prefix}{name}": m for name, m in block.named_modules() if name}
        layer_names = [layer.name for layer in graph.layers if layer.block == b]
        scorer = OutputScores(graph, formats)
        outputs: list[torch.Tensor] = []
        with torch.no_grad():
            for scoring, visit in ((False, scorer.observe), (True, scorer.score)):
                handles = install_hooks(modules, graph, visit, layer_names)
                try:
                    for h, kwargs in zip(hidden, block_kwargs):
                        out = block(h, **kwargs)
                        if scoring:
                            outputs.append((out[0] if isinstance(out, tuple) else out).detach())
                finally:
                    for handle in handles:
                        handle.remove()
        scorer.add_unrouted_weight_errors(modules, layer_names)
        rows.extend(scorer.rows(layer_names))
        hidden = outputs
        block.to("meta")
        # Commit: the rows and the next block's inputs under the next block's number first, then the
        # state file (what a resume reads); a kill between the two leaves the previous commit intact.
        _save_hidden(checkpoint_dir, b + 1, hidden)
        atomic_write_text(checkpoint_dir / _rows_file(b + 1), json.dumps([r.model_dump() for r in rows]))
        atomic_write_text(state_path, json.dumps({"fingerprint": fingerprint, "next_block": b + 1}))
        for stale in (_hidden_file(b), _rows_file(b)):
            (checkpoint_dir / stale).unlink(missing_ok=True)
        release_freed_memory()  # the block's pages back to the system: peak RSS flat in depth
        if progress is not None:
            progress(b + 1, len(blocks), b == start and start > 0)
    return SequentialRun(rows=rows, blocks=len(blocks), resumed_from=start)


def streamed_weight_rows(
    resolved, graph: LayerGraph, formats: list[Format], *, device: str = "cpu", dtype: str = "float32"
) -> list[SensitivityRow]:
    """Weight Omega of every layer of `graph`, each weight read from the safetensors when its turn
    comes and dropped after: no model is built, peak memory is one tensor and its quantized copies."""
    from trtq.model.zoo import weights_directory
    from trtq.sensitivity.weight import layer_weight_rows

    adapter = _sequential_adapter(resolved, graph)
    index = TensorIndex(weights_directory(resolved))
    experts = {layer.name for layer in graph.layers if layer.experts}
    torch_dtype = getattr(torch, dtype)

    def weight_of(name: str) -> torch.Tensor:
        # A fused expert layer is its parameter; any other layer is a Linear module's weight.
        tensor = index.parameter(name if name in experts else f"{name}.weight", adapter.moe)
        return tensor.to(device=device, dtype=torch_dtype)

    with torch.no_grad():
        return layer_weight_rows(graph, formats, weight_of)


def remove_checkpoint(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
