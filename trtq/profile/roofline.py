"""The roofline backend: datasheet peaks and bandwidth, runs anywhere.

latency = max(flops / (peak[compute] * compute_fraction),
              bytes / (hbm_bandwidth * bandwidth_fraction)) + launch_cost
          + activation_pass * tokens * in_features * 2 / hbm_bandwidth

The last term is the separate pass that quantizes a bf16 activation before the GEMM (per-tensor FP8 and
INT8 compute a scale, then cast): serial with the GEMM, so added, not max-ed. Its coefficient is 0 unless
a calibration fitted it (measured tables: 0.5-3 bf16-activation reads for fp8 on H100/B200).

bytes = weight bytes in the format (scales included) + input activations as the
kernel reads them + bf16 output. INT4-AWQ computes at the bf16 rate but moves a
quarter of the weight bytes; W4A8 computes at the FP8 rate.

An MoE grouped GEMM (one launch over the experts of a block) at M tokens routed to k of
E experts computes M x k rows in all (M x k / E per expert on average) and reads the
weights of the experts that receive at least one token: E x (1 - (1 - k/E)^M) of them
in expectation under uniform routing, all E at prefill sizes.
"""

from __future__ import annotations

from pydantic import Field

from trtq.artifacts.io import StrictModel
from trtq.artifacts.profile import ProfileRow
from trtq.profile.harness import GemmCase, case_fields
from trtq.registry.formats import get_format
from trtq.registry.gpus import GpuSpec

OUTPUT_BYTES = 2  # GEMM outputs are bf16


class RooflineParams(StrictModel):
    """Achievable fractions per format (a calibration fits them) and the launch cost."""

    compute_fraction: dict[str, float] = Field(default_factory=dict)
    bandwidth_fraction: dict[str, float] = Field(default_factory=dict)
    default_compute_fraction: float = Field(gt=0, le=1)
    default_bandwidth_fraction: float = Field(gt=0, le=1)
    launch_cost_ns: float = Field(ge=0)
    source: str
    # Per format: the activation-quantize pass, in bf16 reads of the m x k input at HBM bandwidth (0 if absent).
    activation_pass: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def for_gpu(cls, gpu: GpuSpec, launch_cost_ns: float | None = None) -> RooflineParams:
        ach = gpu.achievable
        return cls(
            default_compute_fraction=ach.compute,
            default_bandwidth_fraction=ach.bandwidth,
            launch_cost_ns=ach.launch_cost_ns if launch_cost_ns is None else launch_cost_ns,
            source=ach.source,
        )

    def compute(self, fmt: str) -> float:
        return self.compute_fraction.get(fmt, self.default_compute_fraction)

    def bandwidth(self, fmt: str) -> float:
        return self.bandwidth_fraction.get(fmt, self.default_bandwidth_fraction)

    def activation(self, fmt: str) -> float:
        return self.activation_pass.get(fmt, 0.0)


def activation_pass_ns(gpu: GpuSpec, case: GemmCase) -> float:
    """One bf16 read of the GEMM's m x k input at nominal HBM bandwidth (the activation-quantize pass unit)."""
    return case.tokens * case.in_features * 2 / gpu.hbm_bandwidth_bytes_per_s * 1e9


def gemm_flops(case: GemmCase) -> float:
    return 2.0 * case.tokens * case.out_features * case.in_features


def moe_active_experts(case: GemmCase) -> float:
    """Expected experts receiving at least one of the tokens x experts_per_token routed rows (uniform routing)."""
    e, k = case.experts, case.experts_per_token
    return e * (1.0 - (1.0 - k / e) ** case.tokens)


def moe_flops(case: GemmCase) -> float:
    return 2.0 * case.tokens * case.experts_per_token * case.out_features * case.in_features


def moe_bytes(case: GemmCase, group_size: int | None) -> float:
    fmt = get_format(case.format)
    rows = case.tokens * case.experts_per_token
    return (
        moe_active_experts(case) * fmt.weight_bytes(case.out_features, case.in_features, group_size)
        + fmt.activation_bytes(rows, case.in_features)
        + rows * case.out_features * OUTPUT_BYTES
    )


def gemm_bytes(case: GemmCase, group_size: int | None) -> float:
    fmt = get_format(case.format)
    return (
        fmt.weight_bytes(case.out_features, case.in_features, group_size)
        + fmt.activation_bytes(case.tokens, case.in_features)
        + case.tokens * case.out_features * OUTPUT_BYTES
    )


def roofline_row(gpu: GpuSpec, case: GemmCase, params: RooflineParams) -> ProfileRow:
    fmt = get_format(case.format)
    base = dict(case_fields(case), method="roofline" if case.experts is None else "roofline_grouped_gemm")
    if not gpu.supports(fmt):
        return ProfileRow(
            **base,
            status="unsupported",
            latency_ns=None,
            reason=f"{gpu.name} (sm{gpu.sm}) does not run {fmt.name} (needs sm{fmt.min_sm}+)",
        )
    if not fmt.available_for(case.in_features):
        return ProfileRow(
            **base, status="unsupported", latency_ns=None, reason=fmt.unavailable_reason(case.in_features)
        )
    group_size = fmt.group_size_for(case.in_features)
    moe = case.experts is not None
    flops = moe_flops(case) if moe else gemm_flops(case)
    nbytes = moe_bytes(case, group_size) if moe else gemm_bytes(case, group_size)
    compute_ns = flops / (gpu.peak_flops[fmt.compute] * params.compute(fmt.name)) * 1e9
    memory_ns = nbytes / (gpu.hbm_bandwidth_bytes_per_s * params.bandwidth(fmt.name)) * 1e9
    quantize_ns = params.activation(fmt.name) * activation_pass_ns(gpu, case)
    latency = max(compute_ns, memory_ns) + params.launch_cost_ns + quantize_ns
    return ProfileRow(
        **base,
        status="ok",
        latency_ns=latency,
        provenance="modelled",
        details={
            "flops": flops,
            "bytes": nbytes,
            "compute_ns": compute_ns,
            "memory_ns": memory_ns,
            "launch_cost_ns": params.launch_cost_ns,
            "activation_quantize_ns": quantize_ns,
            "bound": "compute" if compute_ns >= memory_ns else "memory",
            "group_size": group_size,
            **(
                {
                    "active_experts": moe_active_experts(case),
                    "tokens_per_expert": case.tokens * case.experts_per_token / case.experts,
                }
                if moe
                else {}
            ),
        },
    )


class RooflineBackend:
    name = "roofline"
    measures = False
    moe_grouped_gemm = True  # costs GemmCase.experts cases as grouped GEMMs (see moe_bytes)

    def __init__(self, gpu: GpuSpec, params: RooflineParams):
        self.gpu = gpu
        self.params = params
        self.launch_cost_ns = params.launch_cost_ns

    def device_info(self) -> dict:
        return {"gpu": self.gpu.name, "sm": self.gpu.sm, "source": self.gpu.source}

    def settings(self) -> dict:
        return {"roofline": self.params.model_dump()}

    def profile(self, cases, on_row=None) -> list[ProfileRow]:
        rows = []
        for case in cases:
            row = roofline_row(self.gpu, case, self.params)
            rows.append(row)
            if on_row:
                on_row(row)
        return rows
