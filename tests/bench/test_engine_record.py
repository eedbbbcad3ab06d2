"""`trtq bench --engine DIR` never runs a command read from build_record.json: it rebuilds trtllm-serve's
and trtllm-bench's argument lists from the record's validated fields. Checked with crafted records and
fake trtllm-serve / trtllm-bench executables on PATH that record how they were called."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from trtq.artifacts.bench import read_table
from trtq.artifacts.build import LlmApiOptions
from trtq.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests" / "build" / "checkpoints" / "fp8_w4a8awq_kvfp8"
REPORT = ROOT / "tests" / "fixtures" / "bench" / "trtllm_bench_c8" / "trtllm_bench_report.json"

FAKE = '''#!{python}
import json, shutil, sys
from pathlib import Path
argv = sys.argv
with open({calls!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
if Path(argv[0]).name == "trtllm-bench":
    if "prepare-dataset" in argv:
        Path(argv[argv.index("--output") + 1]).write_text('{{"task_id": 0, "input_ids": [1], "output_tokens": 1}}\\n')
    else:
        shutil.copyfile({report!r}, argv[argv.index("--report_json") + 1])
    sys.exit(0)
sys.exit(3)  # trtllm-serve: exit before /health answers
'''


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    for name in ("trtllm-serve", "trtllm-bench"):
        script = bin_dir / name
        script.write_text(FAKE.format(python=sys.executable, calls=str(calls), report=str(REPORT)))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return calls


@pytest.fixture
def built(tmp_path, capsys):
    out = tmp_path / "build"
    assert main(["build", str(CHECKPOINT), "--gpu", "H100", "--max-batch-size", "16", "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _craft(record_dir: Path, **changes) -> None:
    path = record_dir / "build_record.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_crafted_serve_command_is_never_run(built, fakes, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    _craft(built, serve_command=["sh", "-c", f"touch {marker}"],
           bench_commands={"throughput": ["sh", "-c", f"touch {marker}"]})
    code = main(["bench", "--engine", str(built), "--model", "smollm2", "-o", str(tmp_path / "res"),
                 "--concurrency", "1", "--startup-timeout", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trtllm-serve exited with status 3" in err[0]
    assert not marker.exists()
    (argv,) = _calls(fakes)
    assert Path(argv[0]).name == "trtllm-serve"
    assert argv[1:] == [str((CHECKPOINT / "hf").resolve()), "--backend", "pytorch", "--tp_size", "1", "--pp_size", "1",
                        "--extra_llm_api_options", str(tmp_path / "res" / "extra_llm_api_options.yaml"),
                        "--host", "127.0.0.1", "--port", argv[-1]]
    options = LlmApiOptions.model_validate(yaml.safe_load((tmp_path / "res" / "extra_llm_api_options.yaml").read_text()))
    assert options.max_batch_size == 16 and options.kv_cache_config.dtype == "fp8"


@pytest.mark.parametrize("changes, message", [
    ({"model_dir": "--trust_remote_code"}, "model_dir '--trust_remote_code' is not a directory"),
    ({"model_dir": "/"}, "model_dir '/' holds no config.json"),
    ({"tp_size": "1; rm -rf /"}, "tp_size"),
    ({"tp_size": 0}, "tp_size"),
    ({"backend": "sh"}, "backend"),
    ({"tokenizer_dir": "/nonexistent/tok"}, "tokenizer_dir '/nonexistent/tok' is not a directory"),
    ({"llm_api_options": {"kv_cache_config": {"dtype": "fp8"}, "cuda_graph_config": {"batch_sizes": [1]},
                          "max_batch_size": 1, "max_num_tokens": 1, "backend": "tensorrt"}}, "backend"),
    ({"llm_api_options": None}, "without llm_api_options"),
])
def test_crafted_fields_are_refused_in_one_line_before_anything_runs(built, fakes, tmp_path, capsys, changes,
                                                                      message):
    _craft(built, **changes)
    code = main(["bench", "--engine", str(built), "--model", "m", "-o", str(tmp_path / "res"), "--concurrency", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert _calls(fakes) == []


def test_trtllm_bench_offline_numbers_land_in_the_tidy_table(built, fakes, tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["bench", "--engine", str(built), "--tool", "trtllm-bench", "--model",
                 "HuggingFaceTB/SmolLM2-135M-Instruct", "--concurrency", "1,4", "--isl", "128", "--osl", "128",
                 "-o", str(res)]) == 0
    calls = _calls(fakes)
    prepare, c1, c4 = calls
    hf = str((CHECKPOINT / "hf").resolve())
    assert prepare[1:] == ["--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--model_path", hf, "prepare-dataset",
                           "--output", str(res / "dataset.jsonl"), "--random-seed", "0", "token-norm-dist",
                           "--num-requests", "16", "--input-mean", "128", "--output-mean", "128",
                           "--input-stdev", "0", "--output-stdev", "0"]
    for argv, concurrency in ((c1, "1"), (c4, "4")):
        assert argv[5] == "throughput" and argv[argv.index("--concurrency") + 1] == concurrency
        assert argv[argv.index("--extra_llm_api_options") + 1] == str(res / "extra_llm_api_options.yaml")
        assert argv[argv.index("--report_json") + 1] == str(res / f"c{concurrency}" / "trtllm_bench_report.json")
    table = read_table(res / "bench.parquet")
    assert set(table.tool) == {"trtllm-bench"} and set(table.concurrency) == {1, 4}
    assert set(table.gpu) == {"H100-SXM"} and set(table.tool_version) == {"1.2.1"}
    record = json.loads((res / "bench_run.json").read_text())
    assert record["tool"] == "trtllm-bench" and [r["concurrency"] for r in record["runs"]] == [1, 4]


def test_trtllm_bench_needs_an_engine_dir_not_a_url(tmp_path, capsys):
    assert main(["bench", "--url", "http://127.0.0.1:9", "--tool", "trtllm-bench", "--model", "m",
                 "-o", str(tmp_path / "r")]) == 2
    assert "give --engine DIR" in capsys.readouterr().err


def test_bench_options_come_from_its_request():
    from trtq.bench.request import SweepRequest
    from trtq.cli import build_parser
    from trtq.errors import InputError

    args = build_parser().parse_args(["bench", "--url", "http://127.0.0.1:9", "--model", "m", "-o", "out",
                                      "--concurrency", "16,1,4", "--startup-timeout", "60"])
    request = SweepRequest.from_args(args)
    assert request == SweepRequest(url="http://127.0.0.1:9", model="m", output="out", concurrencies=[1, 4, 16],
                                   startup_timeout_s=60)
    # The defaults are the model's: the CLI's and the library's are one.
    defaults = SweepRequest.from_args(build_parser().parse_args(["bench", "--url", "u", "--model", "m", "-o", "o"]))
    assert (defaults.concurrencies, defaults.isl, defaults.osl, defaults.tool, defaults.startup_timeout_s) == \
        ([1, 4, 16, 64], 128, 128, "aiperf", 1800.0)
    for kwargs, message in (({"url": "u", "output": "o"}, "needs --model"),
                            ({"url": "u", "model": "m"}, "needs -o DIR"),
                            ({"model": "m", "output": "o"}, "give --engine DIR"),
                            ({"url": "u", "model": "m", "output": "o", "concurrencies": "0"}, "--concurrency")):
        with pytest.raises(InputError, match=message):
            SweepRequest(**kwargs)
