"""Shipped real text for calibration and evaluation (see SOURCES.md), and its loader."""

from __future__ import annotations

from trtq.data.texts import (
    CALIBRATION_PATH,
    EVALUATION_PATH,
    calibration_text,
    encode_text,
    evaluation_text,
    read_text_file,
    text_sha256,
    token_batches,
    token_windows,
)

__all__ = [
    "CALIBRATION_PATH",
    "EVALUATION_PATH",
    "calibration_text",
    "encode_text",
    "evaluation_text",
    "read_text_file",
    "text_sha256",
    "token_batches",
    "token_windows",
]
