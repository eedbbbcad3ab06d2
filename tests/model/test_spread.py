"""A model spread over several GPUs (bare --device cuda, accelerate's device_map) scores as it does on one."""

from __future__ import annotations

import pytest
import torch

from tests.gating import requires_gpus
from tests.sensitivity.test_sequential import TINY_LLAMA, saved_model


@requires_gpus(2)
def test_spread_model_gives_the_single_gpu_table(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    import trtq.model.device as device
    from trtq.model.zoo import resolve_model, weights_directory
    from trtq.sensitivity.api import fisher_sensitivity

    model_dir = tmp_path / "model"
    saved_model(model_dir, dict(TINY_LLAMA, num_hidden_layers=4, vocab_size=49152))
    AutoTokenizer.from_pretrained(str(weights_directory(resolve_model("smollm2-135m")))).save_pretrained(model_dir)
    one = fisher_sensitivity(str(model_dir), 2, 16, device="cuda:0", formats="fp8")
    # The first GPU reported full: the weights go to the others (accelerate's device_map="auto").
    gpus = torch.cuda.device_count()
    monkeypatch.setattr(device, "gpu_free_memory", lambda d=None: [1] + [40 * 2**30] * (gpus - 1))
    spread = fisher_sensitivity(str(model_dir), 2, 16, device="cuda", formats="fp8")
    assert spread.settings["device"] == "cuda" and f"{gpus} x " in spread.settings["device_name"]
    mine = {(r.layer, r.format): r.omega for r in spread.rows}
    assert mine.keys() == {(r.layer, r.format) for r in one.rows}
    for row in one.rows:
        assert mine[row.layer, row.format] == pytest.approx(row.omega, rel=1e-3)
