"""The one place tests are gated on hardware or the NGC container. Spelled one way:

    @requires_gpu            a CUDA device (marker `gpu`)
    @requires_sm(90)         a CUDA device of compute capability >= 9.0 (marker `gpu`)
    @requires_gpus(2)        at least two CUDA devices (marker `gpu`)
    @requires_ngc            TensorRT-LLM importable and trtllm-build on PATH (marker `ngc`)
"""

from __future__ import annotations

import functools
import importlib.util
import shutil

import pytest


@functools.lru_cache(maxsize=None)
def _cuda_capability() -> tuple[int, int] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(0)


def _gpu_reason() -> str:
    return "needs an NVIDIA GPU: torch.cuda.is_available() is False on this machine"


def requires_gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(_cuda_capability() is None, reason=_gpu_reason())(test))


def requires_sm(minimum: int):
    def decorate(test):
        cap = _cuda_capability()
        have = None if cap is None else cap[0] * 10 + cap[1]
        reason = _gpu_reason() if have is None else f"needs sm{minimum}+, this GPU is sm{have}"
        return pytest.mark.gpu(pytest.mark.skipif(have is None or have < minimum, reason=reason)(test))

    return decorate


def requires_gpus(count: int):
    def decorate(test):
        have = 0
        if _cuda_capability() is not None:
            import torch

            have = torch.cuda.device_count()
        reason = _gpu_reason() if have == 0 else f"needs {count} CUDA devices, this machine has {have}"
        return pytest.mark.gpu(pytest.mark.skipif(have < count, reason=reason)(test))

    return decorate


def _ngc_available() -> bool:
    return importlib.util.find_spec("tensorrt_llm") is not None and shutil.which("trtllm-build") is not None


def requires_ngc(test):
    return pytest.mark.ngc(
        pytest.mark.skipif(
            not _ngc_available(),
            reason="needs the NGC TensorRT-LLM container: tensorrt_llm / trtllm-build are not installed here",
        )(test)
    )
