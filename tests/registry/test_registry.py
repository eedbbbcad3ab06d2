import pytest

from trtq.errors import UnknownNameError, UnsupportedError
from trtq.registry import FORMATS, get_format, get_gpu, list_gpus, parse_formats


def test_registry_has_the_required_gpus_with_datasheet_figures():
    names = {g.name for g in list_gpus()}
    assert {"A100-SXM-80GB", "H100-SXM", "H200", "B200", "L40S"} <= names
    a100, h100, h200, b200 = (get_gpu(n) for n in ("a100", "h100", "h200", "b200"))
    assert a100.peak_flops == {"bf16": 312e12, "int8": 624e12}
    assert a100.hbm_bandwidth_bytes_per_s == pytest.approx(2.04e12, rel=0.01)
    assert h100.peak_flops["bf16"] == pytest.approx(989e12, rel=0.001)
    assert h100.peak_flops["fp8"] == h100.peak_flops["int8"] == pytest.approx(1979e12, rel=0.001)
    assert h100.hbm_bandwidth_bytes_per_s == 3.35e12
    assert h200.peak_flops == h100.peak_flops and h200.hbm_bandwidth_bytes_per_s == 4.8e12
    assert b200.peak_flops == {"bf16": 2250e12, "fp8": 4500e12, "int8": 4500e12, "fp4": 9000e12}
    assert b200.hbm_bandwidth_bytes_per_s == 8e12
    for gpu in list_gpus():
        assert gpu.source.startswith("https://"), gpu.name
        assert gpu.achievable is not None and 0 < gpu.achievable.compute <= 1


@pytest.mark.parametrize(
    "gpu, formats",
    [
        ("A100-SXM-80GB", ["bf16", "int8_sq", "int4_awq"]),
        ("L40S", ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq"]),  # the hardware: Ada runs W4A8 (sm89+)
        ("H100-SXM", ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "fp8_block"]),
        ("B200", ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4", "fp8_block"]),
    ],
)
def test_formats_are_gated_by_architecture(gpu, formats):
    assert [f.name for f in get_gpu(gpu).formats] == formats


def test_unsupported_format_is_refused_naming_gpu_and_format():
    with pytest.raises(UnsupportedError, match=r"fp8 is not supported on A100-SXM-80GB \(sm80\)"):
        get_gpu("a100").require(get_format("fp8"))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown GPU 'v100'.*H100-SXM"):
        get_gpu("v100")
    with pytest.raises(UnknownNameError, match="unknown format 'int3'.*nvfp4"):
        parse_formats("fp8,int3")


def test_block_size_gating_on_input_width():
    int4, nvfp4, fp8 = FORMATS["int4_awq"], FORMATS["nvfp4"], FORMATS["fp8"]
    assert int4.group_size_for(4096) == 128
    assert int4.group_size_for(576) == 64          # SmolLM2's hidden width
    assert not int4.available_for(100)
    with pytest.raises(ValueError):
        int4.group_size_for(100)
    assert nvfp4.group_size_for(576) == 16 and not nvfp4.available_for(24)
    assert fp8.group_size_for(7) is None and fp8.available_for(7)
    block = FORMATS["fp8_block"]               # 128x128 weight tiles: 128 must divide the input width
    assert block.group_size_for(4096) == 128 and block.available_for(1536)
    assert not block.available_for(576) and "divides input width 576" in block.unavailable_reason(576)


def test_weight_bytes_by_hand():
    n, k = 256, 512
    assert FORMATS["bf16"].weight_bytes(n, k) == n * k * 2
    assert FORMATS["fp8"].weight_bytes(n, k) == n * k + 4
    assert FORMATS["int8_sq"].weight_bytes(n, k) == n * k + n * 4 + k * 2
    # int4 values, one fp16 scale per 128-group, and the AWQ pre-quant scale vector
    assert FORMATS["int4_awq"].weight_bytes(n, k) == n * k // 2 + n * (k // 128) * 2 + k * 2
    assert FORMATS["int4_awq"].weight_bytes(n, k, group_size=64) == n * k // 2 + n * (k // 64) * 2 + k * 2
    assert FORMATS["nvfp4"].weight_bytes(n, k) == n * k // 2 + n * (k // 16) + 4
    # fp8 values and one fp32 scale per 128x128 tile: (256/128) x (512/128) tiles
    assert FORMATS["fp8_block"].weight_bytes(n, k) == n * k + (n // 128) * (k // 128) * 4


def test_parse_formats_always_keeps_bf16_first():
    assert [f.name for f in parse_formats("int4_awq,fp8")] == ["bf16", "int4_awq", "fp8"]
    assert [f.name for f in parse_formats(None)] == list(FORMATS)
