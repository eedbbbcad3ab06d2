"""--device / --dtype: one declaration, checked against this machine before any model loads."""

import argparse
import subprocess
import sys

import pytest
import torch

from trtq.errors import InputError, UnsupportedError
from trtq.model.device import add_device_options, resolve_placement


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_device_options(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_spellings():
    args = parse()
    assert (args.device, args.dtype) == ("cpu", "float32")
    assert parse("--device", "CUDA:3").device == "cuda:3"
    for bad in (["--device", "gpu"], ["--device", "cuda:x"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_the_requests_inherit_one_declaration():
    from trtq.eval.request import EvalRequest
    from trtq.quantize.request import QuantizeRequest
    from trtq.sensitivity.request import SensitivityRequest

    assert SensitivityRequest(model="m", device="CUDA:1").device == "cuda:1"
    assert QuantizeRequest(model="m", plan="p", dtype="bfloat16").dtype == "bfloat16"
    assert (EvalRequest(model="m", plan="p").device, EvalRequest(model="m", plan="p").dtype) == ("cpu", "float32")
    with pytest.raises(InputError, match="--device: not a device: 'gpu'"):
        SensitivityRequest(model="m", device="gpu")
    with pytest.raises(InputError, match="--dtype"):
        QuantizeRequest(model="m", plan="p", dtype="int8")
    with pytest.raises(InputError, match="--sequential applies to --method output, weight, fisher or hessian, "
                                         "not autoquantize"):
        SensitivityRequest(model="m", method="autoquantize", sequential=True)
    assert SensitivityRequest(model="m", method="fisher", sequential=True).sequential
    assert SensitivityRequest(model="m", sequential=True).sequential   # the default method, hessian
    assert SensitivityRequest(model="m", method="weight", sequential=True).sequential
    assert SensitivityRequest(model="m").method == "hessian"  # the benchmark's winner (RESULTS.md, plan_quality)
    assert SensitivityRequest(model="m", method="output", sequential=True).sequential


def test_cuda_refused_without_cuda_and_past_the_last_gpu():
    with pytest.raises(UnsupportedError, match="CUDA is not available"):
        resolve_placement("cuda", "bfloat16", cuda_available=False)
    with pytest.raises(UnsupportedError, match="has 2 CUDA device"):
        resolve_placement("cuda:2", "float32", cuda_available=True, cuda_count=2)
    assert resolve_placement("cuda:1", "float16", cuda_available=True, cuda_count=2).device == "cuda:1"
    with pytest.raises(InputError):
        resolve_placement("cpu", "int8")
    assert resolve_placement("cpu", "bfloat16").torch_dtype is torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", [["sensitivity", "smollm2-135m", "-o", "s.json"],
                                     ["quantize", "smollm2-135m", "--plan", "p.yaml", "-o", "out"],
                                     ["eval", "smollm2-135m", "--plan", "p.yaml"]])
def test_cli_refuses_cuda_in_one_line(command, tmp_path):
    (tmp_path / "p.yaml").write_text("")
    result = subprocess.run([sys.executable, "-m", "trtq", *command, "--device", "cuda"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CUDA is not available" in lines[0], lines[0]
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "out").exists()
