"""Typed, versioned, file-based contracts between the stages.

Every stage reads the previous stage's artifact with `load_artifact` and writes its
own with `save_artifact`; both live in `trtq.artifacts.io`. The schemas live here,
one module per artifact kind, so no stage imports the code that made its input.
"""

from trtq.artifacts.io import (
    Artifact,
    InputRef,
    Metadata,
    StrictModel,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    input_ref,
    load_artifact,
    make_metadata,
    save_artifact,
    sha256_file,
)

__all__ = [
    "Artifact",
    "StrictModel",
    "InputRef",
    "Metadata",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "input_ref",
    "load_artifact",
    "make_metadata",
    "save_artifact",
    "sha256_file",
]
