"""A model whose weights cannot fit is refused before it loads: one line naming the size needed and available."""

import json
import shutil
from pathlib import Path

import pytest

from trtq.errors import UnsupportedError
from trtq.model.device import available_memory, require_memory
from trtq.model.zoo import _safetensors_header, resolve_model, weight_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "trtq" / "model" / "configs"
GIB = 1024 ** 3


def write_safetensors_header(path: Path, tensors: dict[str, list[int]]) -> None:
    """A safetensors file's header claiming `tensors` (bf16) with no tensor data behind it: a size claim."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    path.write_bytes(len(data).to_bytes(8, "little") + data)


@pytest.fixture
def claimed_70b(tmp_path):
    """Llama-3.1-70B's shipped config and a sharded checkpoint's index (141 GB of bf16), one tiny shard."""
    directory = tmp_path / "llama-70b"
    directory.mkdir()
    shutil.copy(CONFIGS / "llama-3.1-70b.json", directory / "config.json")
    total = 70_553_706_496 * 2
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": {"model.norm.weight": "model-00030-of-00030.safetensors"}}))
    write_safetensors_header(directory / "model-00030-of-00030.safetensors", {"model.norm.weight": [8192]})
    return directory


def test_sizes_are_read_from_the_index_or_the_headers(claimed_70b, tmp_path):
    assert weight_parameters(resolve_model(str(claimed_70b))) == 70_553_706_496
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(CONFIGS / "llama-3.1-8b.json", single / "config.json")
    write_safetensors_header(single / "model.safetensors", {"a": [4096, 128256], "b": [14336, 4096], "c": [7]})
    assert weight_parameters(resolve_model(str(single))) == 4096 * 128256 + 14336 * 4096 + 7
    assert _safetensors_header(single / "model.safetensors")["c"]["shape"] == [7]
    assert weight_parameters(resolve_model("smollm2-135m")) is None    # a GGUF: not counted


def test_the_cli_refuses_a_model_larger_than_this_machine_in_one_line(claimed_70b, capsys):
    from trtq.cli import main

    need = 70_553_706_496 * 4
    if available_memory("cpu") >= need:
        pytest.skip(f"this machine has {available_memory('cpu') / GIB:.0f} GiB available: a 70B in float32 fits")
    code = main(["sensitivity", str(claimed_70b), "--method", "weight", "--dtype", "float32",
                 "-o", str(claimed_70b / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"need {need / GIB:.1f} GiB in float32 (70,553,706,496 parameters)" in err[0]
    assert "this machine's RAM has" in err[0] and "GiB available" in err[0]
    assert not (claimed_70b / "s.json").exists()


def test_the_requested_device_is_checked_too():
    params = 8_030_261_248
    fits_host = {"cpu": 64 * GIB, "cuda:0": 10 * GIB}
    with pytest.raises(UnsupportedError, match=r"need 15\.0 GiB in bfloat16 .* cuda:0 has 10\.0 GiB available"):
        require_memory("llama-3.1-8b", params, "bfloat16", "cuda:0", available=fits_host)
    require_memory("llama-3.1-8b", params, "bfloat16", "cuda:0", available={"cpu": 64 * GIB, "cuda:0": 80 * GIB})
    # the host reads the weights first, whatever the device
    with pytest.raises(UnsupportedError, match=r"need 29\.9 GiB in float32 .* RAM has 16\.0 GiB"):
        require_memory("llama-3.1-8b", params, "float32", "cuda:0", available={"cpu": 16 * GIB, "cuda:0": 80 * GIB})
    require_memory("no-count", None, "float32", "cpu", available={"cpu": 0})   # nothing counted, nothing refused


def test_a_bare_cuda_spreads_a_model_the_first_gpu_cannot_hold():
    from trtq.model.device import SPREAD_WEIGHT_SHARE, gpu_memory_map, resolve_placement

    # Llama-3.1-70B in bf16 (141 GB) on 8 x H100 with ~79 GiB free each: spread, each GPU up to its share.
    need = 70_553_706_496 * 2
    free = [79 * GIB] * 8
    spread = gpu_memory_map(need, free)
    assert spread == {i: int(79 * GIB * SPREAD_WEIGHT_SHARE) for i in range(8)}
    assert gpu_memory_map(16 * GIB, free) is None                  # the 8B fits the first GPU: one device
    with pytest.raises(UnsupportedError, match=r"need 131\.4 GiB and the 2 visible GPU\(s\) have 126\.4 GiB"):
        gpu_memory_map(need, free[:2])
    # the whole-model check counts every visible GPU for a bare `cuda`, one GPU for `cuda:N`
    require_memory("llama-3.1-70b", 70_553_706_496, "bfloat16", "cuda", available={"cpu": 256 * GIB, "cuda": 632 * GIB})
    with pytest.raises(UnsupportedError, match="more or larger GPUs"):
        require_memory("llama-3.1-70b", 70_553_706_496, "bfloat16", "cuda:0",
                       available={"cpu": 256 * GIB, "cuda:0": 79 * GIB})
    # `cuda` names every visible GPU when there are several, `cuda:N` one
    assert resolve_placement("cuda", "bfloat16", cuda_available=True, cuda_count=2).device == "cuda"
    assert resolve_placement("cuda", "bfloat16", cuda_available=True, cuda_count=1).device == "cuda:0"
    assert resolve_placement("cuda:1", "bfloat16", cuda_available=True, cuda_count=2).device == "cuda:1"
