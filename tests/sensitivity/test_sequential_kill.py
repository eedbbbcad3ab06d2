"""A block-sequential run of the real model, killed with SIGKILL mid-run, resumes to the uninterrupted table."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trtq.artifacts import load_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.sensitivity.api import checkpoint_dir_for
from trtq.sensitivity.sequential import STATE_FILE

ARGS = ["--method", "output", "--samples", "2", "--seq-len", "64", "--formats", "fp8,int8_sq,int4_awq,w4a8_awq"]


def sensitivity(output, *extra):
    return [sys.executable, "-m", "trtq", "sensitivity", "smollm2-135m", *ARGS, *extra, "-o", str(output)]


def table(path):
    return {(r.layer, r.format): (r.omega, r.weight_error) for r in load_artifact(path, Sensitivity).rows}


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_table(tmp_path, loads_smollm2, smollm2_model,
                                                                   smollm2_resolved):
    uninterrupted = tmp_path / "full.json"
    subprocess.run(sensitivity(uninterrupted, "--sequential"), check=True, capture_output=True, timeout=1800)
    assert not checkpoint_dir_for(str(uninterrupted)).exists()   # removed once the table is written

    killed = tmp_path / "killed.json"
    state = checkpoint_dir_for(str(killed)) / STATE_FILE
    process = subprocess.Popen(sensitivity(killed, "--sequential"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state.read_text())["next_block"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= 3:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not killed.exists()
    finished = json.loads(state.read_text())["next_block"]
    assert 3 <= finished < 30

    resumed = subprocess.run(sensitivity(killed, "--sequential"), capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    assert f"block {finished + 1}/30 done (resumed)" in resumed.stderr
    assert table(killed) == table(uninterrupted)
    assert load_artifact(killed, Sensitivity).settings["sequential"] is True

    # The same math with the whole model loaded: equal within float rounding (block vs model forward).
    from trtq.model.layers import build_layer_graph
    from trtq.sensitivity.api import output_sensitivity

    whole = output_sensitivity("smollm2-135m", 2, 64, formats="fp8,int8_sq,int4_awq,w4a8_awq",
                               model=smollm2_model[0], tokenizer=smollm2_model[1])
    assert len(whole.rows) == len(build_layer_graph(smollm2_resolved).layers) * 4
    blockwise = table(uninterrupted)
    for row in whole.rows:
        omega, weight_error = blockwise[row.layer, row.format]
        assert omega == pytest.approx(row.omega, rel=1e-3), (row.layer, row.format)
        assert weight_error == pytest.approx(row.weight_error, rel=1e-6)
