"""Omega of the KV-cache formats: what quantizing the whole KV cache costs the model's output.

Method (`kv_cache_method: kl`): ModelOpt's own KV-cache preset for the format (FP8_KV_CFG,
NVFP4_KV_CFG: the `*[kv]_bmm_quantizer` entries `trtq quantize` applies for a plan's KV format) is
inserted into a copy of the bf16 model and calibrated (max) on the calibration windows; Omega is
the mean per-token KL divergence KL(p_bf16 || p_kv) of the next-token distributions over the same
windows. That is the quantity the Fisher and Hessian layer Omegas approximate to second order for
a layer's weights and inputs (the Fisher is the Hessian of this KL at zero perturbation), so the
planner adds it to the groups' sum of Omega when it decides the KV format. Measured on
SmolLM2-135M (4 windows of 256 tokens): FP8 KV 0.0107. NVFP4 KV needs a CUDA GPU (ModelOpt's
dynamic block quantization asserts a CUDA amax): refused here in one line.
"""

from __future__ import annotations

import copy
from typing import Any

from trtq.errors import InputError, UnsupportedError

METHOD = "kl"


def parse_kv_formats(spec: str | None) -> list[str]:
    from trtq.quantize.quant_cfg import KV_CACHE_PRESETS

    names = [n.strip().lower() for n in (spec or "").split(",") if n.strip()]
    for name in names:
        if name not in KV_CACHE_PRESETS and name != "bf16":
            raise InputError(
                f"unknown KV-cache format {name!r} in --kv-formats; known: bf16, " + ", ".join(KV_CACHE_PRESETS)
            )
    return list(dict.fromkeys(names))


def _log_probs(model: Any, batches: Any, batch_size: int) -> list[Any]:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, batches.shape[0], batch_size):
            out.append(torch.log_softmax(model(batches[start : start + batch_size]).logits.float(), dim=-1))
    return out


def kv_cache_omega(
    model: Any, batches: Any, kv_formats: list[str], batch_size: int = 4, cuda_available: bool | None = None
) -> dict[str, float]:
    """KV format -> mean per-token KL(p_bf16 || p_kv) on `batches` ([samples, seq_len] token ids)."""
    import modelopt.torch.quantization as mtq
    import torch

    from trtq.quantize.apply import _quiet_modelopt, forward_loop_over, kv_cache_quantizers
    from trtq.quantize.quant_cfg import KV_CACHE_NEEDS_CUDA, kv_cache_entries

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    needs_gpu = [kv for kv in kv_formats if kv in KV_CACHE_NEEDS_CUDA]
    if needs_gpu and not cuda_available:
        raise UnsupportedError(
            f"KV-cache sensitivity of {', '.join(needs_gpu)} needs a CUDA GPU (ModelOpt's dynamic "
            "block quantization) and this machine has none: measure it on a GPU machine or "
            "leave it out of --kv-formats"
        )
    model.eval()
    reference = _log_probs(model, batches, batch_size)
    loop = forward_loop_over(batches, batch_size)
    out: dict[str, float] = {}
    for kv in kv_formats:
        if kv == "bf16":
            out[kv] = 0.0
            continue
        quantized = copy.deepcopy(model)
        with _quiet_modelopt():
            mtq.quantize(
                quantized,
                {"quant_cfg": [{"quantizer_name": "*", "enable": False}, *kv_cache_entries(kv)], "algorithm": "max"},
                forward_loop=loop,
            )
        if not kv_cache_quantizers(quantized):
            raise UnsupportedError(
                f"ModelOpt inserted no KV-cache quantizers into this model's attention: "
                f"{kv} KV-cache sensitivity cannot be measured"
            )
        total, tokens = 0.0, 0
        for ref, q in zip(reference, _log_probs(quantized, batches, batch_size)):
            kl = (ref.exp() * (ref - q)).sum(dim=-1)
            total += float(kl.sum())
            tokens += kl.numel()
        out[kv] = max(0.0, total / tokens)
        del quantized
    return out


def kv_cache_sensitivity(
    model_spec: str,
    kv_formats: list[str],
    samples: int,
    seq_len: int,
    seed: int,
    calib: str | None = None,
    model=None,
    tokenizer=None,
) -> dict[str, float]:
    """Load the model and the calibration windows (as the layer methods draw them) and measure."""
    from trtq.sensitivity.api import _calibrated

    c = _calibrated(model_spec, samples, seq_len, seed, model, tokenizer, None, False, calib)
    return kv_cache_omega(c.model, c.batches, kv_formats)
