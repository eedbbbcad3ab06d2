"""A block-sequential run of the real model, killed with SIGKILL mid-run, resumes to the whole-model table.

Kept cheap for CI: one window of 64 tokens, two formats, and no uninterrupted sequential run (that a
resume gives exactly the uninterrupted table is checked on tiny models in test_sequential.py); the
reference is the whole-model computation on the session's loaded model.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trtq.artifacts import load_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.registry import parse_formats
from trtq.sensitivity.api import checkpoint_dir_for
from trtq.sensitivity.sequential import STATE_FILE

SAMPLES, SEQ_LEN, FORMATS = 1, 64, "fp8,int4_awq"
BLOCKS = 30   # SmolLM2-135M's decoder blocks
KILL_AFTER = 3


def sensitivity(output):
    return [sys.executable, "-m", "trtq", "sensitivity", "smollm2-135m", "--method", "output", "--sequential",
            "--samples", str(SAMPLES), "--seq-len", str(SEQ_LEN), "--formats", FORMATS, "-o", str(output)]


def test_sigkill_mid_run_then_resume_gives_the_whole_model_table(tmp_path, loads_smollm2, smollm2_model,
                                                                 smollm2_graph):
    killed = tmp_path / "killed.json"
    state = checkpoint_dir_for(str(killed)) / STATE_FILE
    process = subprocess.Popen(sensitivity(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state.read_text())["next_block"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= KILL_AFTER:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not killed.exists()
    finished = json.loads(state.read_text())["next_block"]
    assert KILL_AFTER <= finished < BLOCKS

    resumed = subprocess.run(sensitivity(killed), capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    assert f"block {finished + 1}/{BLOCKS} done (resumed)" in resumed.stderr
    assert f"block {finished}/{BLOCKS}" not in resumed.stderr      # finished blocks are not recomputed
    assert not checkpoint_dir_for(str(killed)).exists()            # removed once the table is written
    table = load_artifact(killed, Sensitivity)
    assert table.settings["sequential"] is True

    # The same math with the whole model loaded: equal within float rounding (block vs model forward).
    from trtq.sensitivity.api import output_sensitivity

    whole = output_sensitivity("smollm2-135m", SAMPLES, SEQ_LEN, formats=FORMATS,
                               model=smollm2_model[0], tokenizer=smollm2_model[1])
    assert len(whole.rows) == len(smollm2_graph.layers) * len(parse_formats(FORMATS))   # bf16 is always scored
    blockwise = {(r.layer, r.format): (r.omega, r.weight_error) for r in table.rows}
    assert blockwise.keys() == {(r.layer, r.format) for r in whole.rows}
    for row in whole.rows:
        omega, weight_error = blockwise[row.layer, row.format]
        assert omega == pytest.approx(row.omega, rel=1e-3), (row.layer, row.format)
        assert weight_error == pytest.approx(row.weight_error, rel=1e-6)
