"""Block-sequential sensitivity: one decoder block in memory at a time, resumable after a kill.

The approach of GPTQ and llm-compressor's sequential pipeline. The model is built on the meta
device (accelerate's init_empty_weights: no memory); its parts are read from the safetensors files
tensor by tensor (safetensors' safe_open) when their turn comes (`BlockStream`): the embeddings to
run the calibration windows up to the first block, whose inputs are kept (hidden states and the
keyword arguments the model gives every block: rotary position embeddings, attention mask); then
one block at a time, back to the meta device after it.

- `--method output` (`sequential_output_rows`): per block, each layer is scored on the block's inputs
  (trtq.sensitivity.output: the layer-wise Hessian objective, two passes) and the block's outputs
  become the next block's inputs. Peak memory: one block, the embeddings and the cached hidden
  states ([windows, seq_len, hidden] float32), not the model.
- `--method fisher` (`sequential_fisher_rows`): the whole model's loss gradient, backpropagated one
  block at a time with the activations checkpointed at the block boundaries (on disk); the same
  table as the whole model loaded.
- `--method weight` (`streamed_weight_rows`): one weight tensor at a time, no model built.

After each step the results so far are written to a checkpoint directory, atomically (temporary
file, fsync, rename; the state file last, as the commit point): a run killed at any moment,
SIGKILL included, resumes from the last finished step and gives the same table as an uninterrupted
run. The directory records what it was computed from; a resume with other settings is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
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
        for name, _ in list(module.named_parameters()):
            self.load_parameter(module, name, device, dtype, prefix=prefix, layout=layout)

    def load_parameter(
        self, module: torch.nn.Module, name: str, device: str, dtype: torch.dtype, *, prefix: str = "", layout=None
    ) -> None:
        """One parameter of `module`, frozen: sensitivity needs gradients of activations, never of weights."""
        from accelerate.utils import set_module_tensor_to_device

        value = self.parameter(f"{prefix}{name}", layout)
        set_module_tensor_to_device(module, name, device, value=value, dtype=dtype)
        module.get_parameter(name).requires_grad_(False)


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


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
            f"{resolved.name}: block-sequential processing needs a family adapter "
            f"(model_type {resolved.config.get('model_type')!r} has none)"
        )
    if any(layer.block is None for layer in graph.layers):
        raise InputError("block-sequential sensitivity scores the decoder blocks only: drop --include-lm-head")
    return adapter


class BlockStream:
    """The model built on the meta device, its parts read from the safetensors when their turn comes.

    `first_block_inputs` runs the calibration windows up to the first block (the embeddings alone
    in memory); `block(b)` holds decoder block b in memory while open; `head_gradients` runs the
    final norm, lm_head and the model's own loss on the last block's outputs."""

    def __init__(self, resolved, graph: LayerGraph, device: str, dtype: str, weights: Path | None = None):
        """`weights`: the directory the tensors are read from (default: the model's own safetensors)."""
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM

        from trtq.model.zoo import hf_config, weights_directory

        self.adapter = _sequential_adapter(resolved, graph)
        self.graph = graph
        self.device = device
        self.dtype = getattr(torch, dtype)
        self.index = TensorIndex(weights if weights is not None else weights_directory(resolved))
        with init_empty_weights():
            self.model = AutoModelForCausalLM.from_config(hf_config(resolved), dtype=self.dtype)
        self.model.eval()
        self.blocks = self.model.get_submodule(self.adapter.block_path)

    def __len__(self) -> int:
        return len(self.blocks)

    def first_block_inputs(self, batches: torch.Tensor) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        """Per window: the first block's hidden states and the keyword inputs the model gives every block
        (rotary position embeddings, attention mask)."""
        embeddings = self.model.get_input_embeddings()
        embed_name = next(n for n, m in self.model.named_modules() if m is embeddings)
        self.index.load(embeddings, f"{embed_name}.", self.device, self.dtype)
        captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

        def catch(module, args, kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            captured.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
            raise _FirstBlockReached

        handle = self.blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            with torch.no_grad():
                for ids in batches:
                    try:
                        self.model(input_ids=ids.reshape(1, -1).to(self.device), use_cache=False)
                    except _FirstBlockReached:
                        pass
        finally:
            handle.remove()
            _release_parameters(embeddings)
        return [h for h, _ in captured], [_to(kwargs, self.device) for _, kwargs in captured]

    def block_layers(self, b: int) -> LayerGraph:
        """The graph of block b's layers alone."""
        return self.graph.model_copy(update={"layers": [layer for layer in self.graph.layers if layer.block == b]})

    @contextlib.contextmanager
    def block(self, b: int) -> Iterator[tuple[torch.nn.Module, dict[str, torch.nn.Module], LayerGraph]]:
        """Block b read into memory: (the block, its modules by full name, the graph of its layers alone)."""
        block = self.blocks[b]
        prefix = f"{self.adapter.block_path}.{b}."
        self.index.load(block, prefix, self.device, self.dtype, self.adapter.moe)
        modules = {f"{prefix}{name}": m for name, m in block.named_modules() if name}
        try:
            yield block, modules, self.block_layers(b)
        finally:
            _release_parameters(block)
            release_freed_memory()  # the block's pages back to the system: peak RSS flat in depth

    @contextlib.contextmanager
    def head(self) -> Iterator[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """While open, the model's head in memory: `loss(h, ids)` is the model's own loss (labels = ids) on the
        last block's outputs h. The model runs with its blocks swapped out, so its own final norm, lm_head
        and loss apply (tied embeddings tied as the model ties them)."""
        parent_path, _, attribute = self.adapter.block_path.rpartition(".")
        parent = self.model.get_submodule(parent_path)
        setattr(parent, attribute, torch.nn.ModuleList())
        tied = set(getattr(self.model, "all_tied_weights_keys", {}) or {})

        def loss(h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return self.model(inputs_embeds=h, labels=ids.reshape(1, -1).to(self.device), use_cache=False).loss

        try:
            for name, _ in list(self.model.named_parameters()):
                if name not in tied:
                    self.index.load_parameter(self.model, name, self.device, self.dtype)
            self.model.tie_weights()
            yield loss
        finally:
            _release_parameters(self.model)
            setattr(parent, attribute, self.blocks)
            release_freed_memory()

    def head_gradients(self, hidden: list[torch.Tensor], batches: torch.Tensor) -> list[torch.Tensor]:
        """dL/dh for the last block's outputs `hidden`, L the model's own loss on each window."""
        gradients = []
        with self.head() as loss:
            for h, ids in zip(hidden, batches):
                h = h.detach().requires_grad_(True)
                loss(h, ids).backward()
                gradients.append(h.grad.detach())
        return gradients


def _release_parameters(module: torch.nn.Module) -> None:
    """`module`'s parameters back to the meta device; its buffers (rotary frequencies) stay where they are,
    for the next pass that reads the module."""
    from accelerate.utils import set_module_tensor_to_device

    for name, _ in list(module.named_parameters()):
        set_module_tensor_to_device(module, name, "meta")


class Checkpoint:
    """A block-sequential run's partial results: tensors and rows per step, and the state file last,
    as the commit point. A directory computed from other settings or inputs is refused."""

    def __init__(self, directory: Path, settings: dict[str, Any], model: str, batches: torch.Tensor):
        self.directory = Path(directory)
        self.fingerprint = _fingerprint(
            {
                **settings,
                "version": CHECKPOINT_VERSION,
                "model": model,
                "batches": hashlib.sha256(batches.cpu().numpy().tobytes()).hexdigest(),
            }
        )
        self.state: dict[str, Any] = {}
        state_path = self.directory / STATE_FILE
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("fingerprint") != self.fingerprint:
                raise InputError(
                    f"{self.directory} holds a partial run with other settings or inputs: "
                    "remove it, or give the settings it was started with"
                )
            self.state = state
        self.directory.mkdir(parents=True, exist_ok=True)

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.directory / name) as tmp:
            save_file({k: t.detach().contiguous().cpu() for k, t in tensors.items()}, str(tmp))

    def load_tensors(self, name: str, device: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return {k: t.to(device) for k, t in load_file(str(self.directory / name), device="cpu").items()}

    def save_windows(self, name: str, windows: list[torch.Tensor]) -> None:
        self.save_tensors(name, {f"window.{i}": w for i, w in enumerate(windows)})

    def load_windows(self, name: str, device: str) -> list[torch.Tensor]:
        tensors = self.load_tensors(name, device)
        return [tensors[f"window.{i}"] for i in range(len(tensors))]

    def save_json(self, name: str, value: Any) -> None:
        atomic_write_text(self.directory / name, json.dumps(value))

    def load_json(self, name: str) -> Any:
        return json.loads((self.directory / name).read_text())

    def save_rows(self, name: str, rows: list[SensitivityRow]) -> None:
        self.save_json(name, [r.model_dump() for r in rows])

    def load_rows(self, name: str) -> list[SensitivityRow]:
        return [SensitivityRow.model_validate(r) for r in self.load_json(name)]

    def commit(self, **state: Any) -> None:
        self.state = {"fingerprint": self.fingerprint, **state}
        atomic_write_text(self.directory / STATE_FILE, json.dumps(self.state))

    def remove(self, *names: str) -> None:
        for name in names:
            (self.directory / name).unlink(missing_ok=True)


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
    stream = BlockStream(resolved, graph, device, dtype)
    checkpoint = Checkpoint(checkpoint_dir, settings, resolved.name, batches)
    start = int(checkpoint.state.get("next_block", 0))
    rows = checkpoint.load_rows(_rows_file(start)) if start else []
    hidden, block_kwargs = stream.first_block_inputs(batches)
    if start:
        hidden = checkpoint.load_windows(_hidden_file(start), device)

    for b in range(start, len(stream)):
        with stream.block(b) as (block, modules, layers):
            names = [layer.name for layer in layers.layers]
            scorer = OutputScores(graph, formats)
            visit_block(block, modules, layers, hidden, block_kwargs, scorer.observe)
            outputs = visit_block(block, modules, layers, hidden, block_kwargs, scorer.score)
            scorer.add_unrouted_weight_errors(modules, names)
            rows.extend(scorer.rows(names))
            hidden = outputs
        # Commit: the rows and the next block's inputs under the next block's number first, then the
        # state file (what a resume reads); a kill between the two leaves the previous commit intact.
        checkpoint.save_windows(_hidden_file(b + 1), hidden)
        checkpoint.save_rows(_rows_file(b + 1), rows)
        checkpoint.commit(next_block=b + 1)
        checkpoint.remove(_hidden_file(b), _rows_file(b))
        if progress is not None:
            progress(b + 1, len(stream), b == start and start > 0)
    return SequentialRun(rows=rows, blocks=len(stream), resumed_from=start)


def block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def visit_block(block, modules, layers: LayerGraph, hidden, block_kwargs, visit) -> list[torch.Tensor]:
    """One no-grad pass of the windows through the block, `visit` seeing each of its layers' inputs (a
    trtq.sensitivity.operands Visit); the block's outputs, one per window."""
    handles = install_hooks(modules, layers, visit)
    try:
        with torch.no_grad():
            return [block_output(block(h, **kw)).detach() for h, kw in zip(hidden, block_kwargs)]
    finally:
        for handle in handles:
            handle.remove()


def _gradient_file(block: int) -> str:
    return f"gradient-{block:05d}.safetensors"  # dL/d(outputs of `block`)


def _smoothing_file(block: int) -> str:
    return f"smoothing-{block:05d}.safetensors"  # SmoothQuant scales of the layers of `block`


def _operand_name(key: tuple[str, int | None]) -> str:
    name, expert = key
    return name if expert is None else f"{name}#{expert}"


def _operand_key(name: str) -> tuple[str, int | None]:
    layer, _, expert = name.partition("#")
    return layer, int(expert) if expert else None


def sequential_fisher_rows(
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
    """The whole-model Fisher Omega (trtq.sensitivity.fisher), one decoder block in memory at a time.

    Backpropagation with the model's activations checkpointed at the block boundaries: a forward
    pass block by block keeps every block's inputs (in the checkpoint directory, not in memory) and
    calibrates each layer's SmoothQuant scales; the model's own head and loss give dL/dh at the last
    block's outputs; then, block by block from the last, the block is recomputed from its inputs and
    backpropagated from the gradient at its outputs, which scores its layers and gives the gradient
    at its inputs for the block before. The gradients are the whole model's, so the table is the
    whole-model table (within float rounding), not a block-local approximation. 2 x blocks steps;
    a resume continues from the last finished step of either pass."""
    from trtq.sensitivity.fisher import FisherScores
    from trtq.sensitivity.operands import ChannelMaxima

    stream = BlockStream(resolved, graph, device, dtype)
    checkpoint = Checkpoint(checkpoint_dir, settings, resolved.name, batches)
    blocks = len(stream)
    steps = 2 * blocks
    done = int(checkpoint.state.get("steps", 0))
    resumed_from = done
    hidden, block_kwargs = stream.first_block_inputs(batches)
    if done == 0:
        checkpoint.save_windows(_hidden_file(0), hidden)
    del hidden

    for b in range(done, blocks):  # forward: every block's inputs kept, smoothing calibrated
        hidden = checkpoint.load_windows(_hidden_file(b), device)
        with stream.block(b) as (block, modules, layers):
            maxima = ChannelMaxima()
            outputs = visit_block(block, modules, layers, hidden, block_kwargs, maxima.observe)
        checkpoint.save_windows(_hidden_file(b + 1), outputs)
        checkpoint.save_tensors(_smoothing_file(b), {_operand_name(k): s for k, s in maxima.scales().items()})
        checkpoint.commit(steps=b + 1)
        del hidden, outputs
        if progress is not None:
            progress(b + 1, steps, b == resumed_from and resumed_from > 0)

    rows: list[SensitivityRow] = []
    first_backward = max(done, blocks)
    if first_backward == blocks:
        gradients = stream.head_gradients(checkpoint.load_windows(_hidden_file(blocks), device), batches)
    else:
        gradients = checkpoint.load_windows(_gradient_file(steps - first_backward), device)
        rows = checkpoint.load_rows(_rows_file(steps - first_backward))
    for step in range(first_backward, steps):  # backward: the last block first
        b = steps - step - 1
        hidden = checkpoint.load_windows(_hidden_file(b), device)
        smoothing = {_operand_key(name): s for name, s in checkpoint.load_tensors(_smoothing_file(b), device).items()}
        with stream.block(b) as (block, modules, layers):
            scorer = FisherScores(modules, layers, formats, smoothing)
            inputs_gradients = []
            with scorer:
                for h, kw, g in zip(hidden, block_kwargs, gradients):
                    h = h.detach().requires_grad_(True)
                    block_output(block(h, **kw)).backward(g)
                    inputs_gradients.append(h.grad.detach())
            rows = scorer.rows() + rows
        gradients = inputs_gradients
        checkpoint.save_windows(_gradient_file(b), gradients)
        checkpoint.save_rows(_rows_file(b), rows)
        checkpoint.commit(steps=step + 1)
        checkpoint.remove(
            _gradient_file(b + 1), _rows_file(b + 1), _hidden_file(b), _hidden_file(b + 1), _smoothing_file(b)
        )
        if progress is not None:
            progress(step + 1, steps, step == resumed_from and resumed_from > 0)
    return SequentialRun(rows=rows, blocks=blocks, resumed_from=resumed_from)


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
