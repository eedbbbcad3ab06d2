"""`trtq eval --checkpoint DIR --sequential`: both perplexities with one decoder block in memory at a time.

The reference streams from the model's safetensors (trtq.sensitivity.sequential.BlockStream: the
model built on the meta device, each part read when its turn comes); the quantized model streams
from the checkpoint: the same skeleton, each block rebuilt from the exported tensors when its turn
comes (`CheckpointBlockStream`, trtq.eval.checkpoint.rebuild_from_checkpoint: the same
CheckpointLinear / CheckpointExperts as the whole-model rebuild), the embeddings, final norm and
head read from the checkpoint. Between blocks only the windows' hidden states are kept
([windows, seq_len, hidden] in the compute dtype), so the peak is one block plus those states, not
two models. The computation is the whole-model one, block by block: the same perplexities up to
float rounding (tested against the loaded path).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trtq.artifacts.layers import LayerGraph
from trtq.errors import UnsupportedError
from trtq.eval.checkpoint import (
    Checkpoint,
    RebuiltPart,
    _TensorStore,
    check_all_consumed,
    check_layers_exist,
    checkpoint_notes,
    rebuild_from_checkpoint,
)
from trtq.eval.perplexity import Perplexity
from trtq.model.memory import release_freed_memory
from trtq.sensitivity.sequential import BlockStream, block_output


def streamed_perplexity(stream: BlockStream, windows: torch.Tensor) -> Perplexity:
    """exp(mean next-token NLL) over `windows` ([n, seq_len] ids), the model run block by block from `stream`:
    the model's own loss on each window (its final norm, head and loss), as `perplexity` scores a loaded model."""
    hidden, block_kwargs = stream.first_block_inputs(windows)
    with torch.no_grad():
        for b in range(len(stream)):
            hidden = _through_block(stream, b, hidden, block_kwargs)
        total = 0.0
        predicted = windows.shape[1] - 1
        with stream.head() as loss:
            for h, ids in zip(hidden, windows):
                # the mean over the window's predicted tokens, back to their sum
                total += float(loss(h, ids).double()) * predicted
    count = predicted * int(windows.shape[0])
    return Perplexity(ppl=math.exp(total / count), nll=total, tokens=count, windows=int(windows.shape[0]))


def _through_block(stream: BlockStream, b: int, hidden: list[torch.Tensor], block_kwargs) -> list[torch.Tensor]:
    """The windows through block b; a function of its own, so that nothing of the block outlives it (a loop
    variable would hold it while the next block is read)."""
    with stream.block(b) as (block, _, _):
        return [block_output(block(h, **kw)).detach() for h, kw in zip(hidden, block_kwargs)]


class CheckpointBlockStream(BlockStream):
    """The reference's skeleton with the checkpoint's tensors: block b rebuilt from them while open."""

    def __init__(self, resolved, graph, device: str, dtype: str, checkpoint: Checkpoint):
        super().__init__(resolved, graph, device, dtype, weights=checkpoint.hf)
        self.checkpoint = checkpoint
        self.store = _TensorStore(checkpoint.weight_files)
        check_layers_exist(checkpoint, self.model)
        head = self.model.get_output_embeddings()
        head_name = next((n for n, m in self.model.named_modules() if m is head), None)
        if head_name is not None and checkpoint.layer_quant(head_name) is not None:
            raise UnsupportedError(
                f"checkpoint {checkpoint.root} quantizes the output head {head_name}: --sequential rebuilds the "
                "decoder blocks only; drop --sequential"
            )
        self.rebuilt = RebuiltPart()
        # What the embeddings and head pass reads from the checkpoint (a tied head is read once, as its embedding).
        blocks = f"{self.adapter.block_path}."
        self.rebuilt.consumed |= {
            key for key in self.model.state_dict() if not key.startswith(blocks) and key in self.store
        }

    @contextlib.contextmanager
    def block(self, b: int) -> Iterator[tuple[torch.nn.Module, dict[str, torch.nn.Module], LayerGraph]]:
        from accelerate.utils import set_module_tensor_to_device

        prefix = f"{self.adapter.block_path}.{b}."
        block = copy.deepcopy(self.blocks[b])  # parameters on the meta device: nothing copied
        for name, parameter in list(block.named_parameters()):
            empty = torch.empty(parameter.shape, dtype=self.dtype, device=self.device)
            set_module_tensor_to_device(block, name, self.device, value=empty)
        self.rebuilt.add(rebuild_from_checkpoint(block, self.checkpoint, self.store, self.dtype, prefix))
        block.eval()
        try:
            yield block, {f"{prefix}{name}": m for name, m in block.named_modules() if name}, self.block_layers(b)
        finally:
            del block
            release_freed_memory()

    def finish(self) -> tuple[dict[str, int], list[str]]:
        """After a full pass: every checkpoint tensor placed (else an error), and (layer counts, notes)."""
        check_all_consumed(self.store, self.rebuilt.consumed)
        r = self.rebuilt
        return r.counts, checkpoint_notes(self.checkpoint, r.counts, r.moe_layers, r.folded, self.dtype)


@dataclass
class SequentialScores:
    reference: Perplexity
    quantized: Perplexity
    layer_formats: dict[str, int]
    notes: list[str]


def sequential_checkpoint_scores(
    resolved, checkpoint: Checkpoint, windows: torch.Tensor, device: str, dtype: str, say
) -> SequentialScores:
    """The reference's and the checkpoint's perplexities on `windows`, each streamed one block at a time."""
    import time

    from trtq.model.layers import build_layer_graph

    graph = build_layer_graph(resolved)
    quantized_stream = CheckpointBlockStream(resolved, graph, device, dtype, checkpoint)  # its refusals first
    started = time.perf_counter()
    reference = streamed_perplexity(BlockStream(resolved, graph, device, dtype), windows)
    say(
        f"reference perplexity {reference.ppl:.3f} over {reference.windows} x {windows.shape[1]} tokens, "
        f"one decoder block at a time ({time.perf_counter() - started:.0f} s)"
    )
    started = time.perf_counter()
    quantized = streamed_perplexity(quantized_stream, windows)
    counts, notes = quantized_stream.finish()
    say(
        f"quantized perplexity {quantized.ppl:.3f}, one rebuilt block at a time ({time.perf_counter() - started:.0f} s)"
    )
    notes.append(
        f"block-sequential: the reference streamed from its safetensors and the checkpoint rebuilt one of "
        f"{len(quantized_stream)} decoder blocks at a time; perplexity from the model's own loss per window"
    )
    return SequentialScores(reference, quantized, counts, notes)
