"""trtq: per-layer mixed precision for TensorRT-LLM, planned against measured latency."""

__version__ = "0.1.0"
