"""A block-sequential run of the real model, killed with SIGKILL mid-run, resumes to the whole-model table:
`--method output` (a step a block) and `--method fisher` (killed in its backward pass, the second half of its
2 x blocks steps).

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
# method: (steps of a run, the state's counter, kill once it reaches)
METHODS = {"output": (BLOCKS, "next_block", 3), "fisher": (2 * BLOCKS, "steps", BLOCKS + 3)}


def sensitivity(method, output):
    return [sys.executable, "-m", "trtq", "sensitivity", "smollm2-135m", "--method", method, "--sequential",
            "--samples", str(SAMPLES), "--seq-len", str(SEQ_LEN), "--formats", FORMATS, "-o", str(output)]


@pytest.mark.parametrize("method", METHODS)
def test_sigkill_mid_run_then_resume_gives_the_whole_model_table(tmp_path, loads_smollm2, smollm2_model,
                                                                 smollm2_graph, method):
    steps, counter, kill_after = METHODS[method]
    killed = tmp_path / "killed.json"
    state = checkpoint_dir_for(str(killed)) / STATE_FILE
    process = subprocess.Popen(sensitivity(method, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state.read_text())[counter]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= kill_after:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not killed.exists()
    finished = json.loads(state.read_text())[counter]
    assert kill_after <= finished < steps

    resumed = subprocess.run(sensitivity(method, killed), capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{method}: step {finished + 1}/{steps} done (resumed)" in resumed.stderr
    assert f"step {finished}/{steps}" not in resumed.stderr      # finished steps are not recomputed
    assert not checkpoint_dir_for(str(killed)).exists()            # removed once the table is written
    table = load_artifact(killed, Sensitivity)
    assert table.settings["sequential"] is True

    # The same math with the whole model loaded: equal within float rounding (block vs model forward).
    from trtq.sensitivity.api import fisher_sensitivity, output_sensitivity

    whole_model = {"output": output_sensitivity, "fisher": fisher_sensitivity}[method]
    whole = whole_model("smollm2-135m", SAMPLES, SEQ_LEN, formats=FORMATS,
                        model=smollm2_model[0], tokenizer=smollm2_model[1])
    assert len(whole.rows) == len(smollm2_graph.layers) * len(parse_formats(FORMATS))   # bf16 is always scored
    blockwise = {(r.layer, r.format): (r.omega, r.weight_error) for r in table.rows}
    assert blockwise.keys() == {(r.layer, r.format) for r in whole.rows}
    for row in whole.rows:
        omega, weight_error = blockwise[row.layer, row.format]
        assert omega == pytest.approx(row.omega, rel=1e-3), (row.layer, row.format)
        assert weight_error == pytest.approx(row.weight_error, rel=1e-6)
