"""`trtq quantize --sequential`: ModelOpt on a model whose decoder blocks accelerate offloads.

`load_pretrained(offload_folder=...)` leaves the decoder blocks in host RAM (a GPU run) or on disk (a
CPU run) and ModelOpt brings one onto the device at a time: its layerwise calibration
(`quantize_model(layerwise=True)`) and its streaming HF export. ModelOpt 0.47 gets three things wrong
for such a model, each mended here for the duration of the step only, by swapping one ModelOpt
function for a wrapper of it (`_swapped`):

* a block that calibration rewrote (AWQ, SmoothQuant) and that was offloaded to disk is written back
  to the offload's in-RAM state dict ("writing updates back to disk offload files is TODO" in its
  accelerate plugin), so host memory grows to the whole model: moved to the offload folder instead;
* glibc keeps the freed pages of each block mapped, so the peak grows by about a block per block
  (trtq.model.memory): handed back after each block's window closes;
* the export first resmooths and requantizes layers that share an input (q/k/v and gate/up in AWQ or
  SmoothQuant, a layer norm folding AWQ's scale) under `fsdp2_aware_weight_update`, which does not
  materialize offloaded weights: their scales came out on the meta device and the export failed.

What it writes differs from the whole-model export by rounding only (tests/quantize/test_sequential.py):
the whole-model path exports a bf16 copy, the streaming one rounds the calibrated float32 model once
(`unquantized_tensors_to_bf16`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The streaming export holds one shard in memory before writing it (ModelOpt's default: 10 GB), and the
# bf16 rewrite reads one shard at a time: a smaller shard keeps the export's peak near one block and one shard.
STREAMING_SHARD_SIZE = "2GB"
# The tensors a checkpoint holds in the model's dtype (the exporters' scales are float32 by design).
MODEL_DTYPE_TENSORS = ("weight", "bias", "pre_quant_scale")


@contextlib.contextmanager
def offload_directory(beside: str | os.PathLike[str] | None) -> Iterator[Path]:
    """A temporary folder for accelerate's disk offload beside `beside` (the run's output; None: the system's
    temporary directory), removed afterwards whatever happens."""
    import shutil
    import tempfile

    from trtq.artifacts.paths import make_temp_beside

    folder = make_temp_beside(Path(beside), directory=True) if beside is not None else Path(tempfile.mkdtemp())
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_offloaded(model: Any) -> bool:
    """Whether accelerate offloads some of `model`'s weights (to host RAM or disk)."""
    from modelopt.torch.quantization.utils.core_utils import has_accelerate_offload

    return bool(has_accelerate_offload(model))


def _to_bf16(name: str, dtype: str) -> bool:
    return dtype == "F32" and name.rsplit(".", 1)[-1] in MODEL_DTYPE_TENSORS


def _data_bytes(shard: Path) -> int:
    """The bytes of tensor data in a safetensors file (what the shard index's total_size counts)."""
    with open(shard, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
    return shard.stat().st_size - 8 - header_size


def _rewrite_in_bf16(shard: Path) -> int:
    """`shard` with its float32 weights, biases and pre_quant_scales in bf16, written one tensor at a time in
    the safetensors layout (8-byte header size, JSON header, the tensors' bytes in header order: the larger
    elements first, so every tensor stays aligned to its element size), each read with the file opened anew:
    a file held open would keep every page read through its memory map resident. Returns the data bytes."""
    import torch
    from safetensors import safe_open

    from trtq.artifacts.io import atomic_path
    from trtq.model.zoo import DTYPE_BYTES

    with safe_open(str(shard), framework="pt") as handle:
        metadata = handle.metadata()
        parts = {
            name: (handle.get_slice(name).get_dtype(), handle.get_slice(name).get_shape()) for name in handle.keys()
        }
    written = {name: ("BF16" if _to_bf16(name, dtype) else dtype, shape) for name, (dtype, shape) in parts.items()}
    order = sorted(written, key=lambda name: (-DTYPE_BYTES[written[name][0]], name))
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in order:
        dtype, shape = written[name]
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with atomic_path(shard) as tmp, open(tmp, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for name in order:
            with safe_open(str(shard), framework="pt") as handle:
                tensor = handle.get_tensor(name)
            if written[name][0] != parts[name][0]:
                tensor = tensor.to(torch.bfloat16)
            out.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            del tensor
    return offset


@contextlib.contextmanager
def _swapped(module: Any, name: str, replacement: Any) -> Iterator[Any]:
    """`module.name` is `replacement` for the duration; yields the original."""
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield original
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def _writeback_to_disk() -> Iterator[None]:
    """What ModelOpt writes back into a disk offload's RAM state dict goes to the offload folder, in
    accelerate's own format (`offload_weight`: a .dat file and the index entry its loader reads)."""
    from accelerate.utils import offload_weight
    from accelerate.utils.offload import OffloadedWeightsLoader, PrefixedDataset
    from modelopt.torch.quantization.plugins import accelerate as modelopt_accelerate

    def writeback(module: Any, align_hook: Any) -> None:
        original(module, align_hook)
        weights = align_hook.weights_map
        loader = getattr(weights, "dataset", None)
        if isinstance(weights, PrefixedDataset) and isinstance(loader, OffloadedWeightsLoader) and loader.save_folder:
            for key in [k for k in loader.state_dict if k in loader.index]:
                offload_weight(loader.state_dict.pop(key), key, loader.save_folder, index=loader.index)

    with _swapped(modelopt_accelerate, "_writeback_params_to_weights_map", writeback) as original:
        yield


@contextlib.contextmanager
def _freed_memory_returned() -> Iterator[None]:
    """Each time ModelOpt closes a module's weight window (a block's, in layerwise calibration and in
    the streaming export), the freed heap pages go back to the system."""
    from modelopt.torch.quantization.utils import core_utils

    from trtq.model.memory import release_freed_memory

    @contextlib.contextmanager
    def window(*args: Any, **kwargs: Any) -> Iterator[None]:
        with original(*args, **kwargs):
            yield
        release_freed_memory()

    with _swapped(core_utils, "enable_weight_access_and_writeback", window) as original:
        yield


@contextlib.contextmanager
def _fusion_materializes_weights() -> Iterator[None]:
    """The export's shared-input fusion also materializes the offloaded modules it updates, and writes
    them back."""
    from modelopt.torch.export import unified_export_hf
    from modelopt.torch.quantization.utils import core_utils

    @contextlib.contextmanager
    def materialized_update(root_model: Any, modules: Any, reshard: bool = True) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for module in modules if isinstance(modules, list) else [modules]:
                stack.enter_context(core_utils.enable_weight_access_and_writeback(module, root_model, writeback=True))
            with original(root_model, modules, reshard):
                yield

    with _swapped(unified_export_hf, "fsdp2_aware_weight_update", materialized_update) as original:
        yield


@contextlib.contextmanager
def offloaded_calibration() -> Iterator[None]:
    """Around ModelOpt's layerwise calibration of a block-offloaded model."""
    with _writeback_to_disk(), _freed_memory_returned():
        yield


@contextlib.contextmanager
def offloaded_export() -> Iterator[None]:
    """Around ModelOpt's streaming HF export of a block-offloaded model."""
    with _writeback_to_disk(), _freed_memory_returned(), _fusion_materializes_weights():
        yield


def unquantized_tensors_to_bf16(directory: Path) -> None:
    """The streaming export writes unquantized weights in the dtype the model calibrated in (float32 on a
    CPU); write them in bf16, as the whole-model export and TensorRT-LLM do, and say so in config.json and
    the shard index. Each shard is rewritten beside itself one tensor at a time and renamed over it."""
    from safetensors import safe_open

    from trtq.artifacts.io import atomic_write_text

    total_bytes = 0
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}
        if any(_to_bf16(name, dtype) for name, dtype in dtypes.items()):
            total_bytes += _rewrite_in_bf16(shard)
        else:
            total_bytes += _data_bytes(shard)
    index_path = directory / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index.setdefault("metadata", {})["total_size"] = total_bytes
        atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "bfloat16"
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
