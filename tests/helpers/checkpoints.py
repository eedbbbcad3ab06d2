"""Editing copies of an exported checkpoint, for the tests that feed trtq eval a broken one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def copy_checkpoint(source: Path, directory: Path) -> Path:
    """A copy of the checkpoint `source`'s JSON and plan; the weights linked, not copied."""
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns("*.safetensors", "trtllm"))
    (directory / "hf" / "model.safetensors").symlink_to(source / "hf" / "model.safetensors")
    return directory


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rewrite_weights(directory: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    target = directory / "hf" / "model.safetensors"
    tensors = load_file(str(target))
    edit(tensors)
    target.unlink()
    save_file(tensors, str(target), metadata={"format": "pt"})
