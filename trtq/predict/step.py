"""The serving step model and the scheduling model behind `trtq predict`.

What one engine step costs
--------------------------
A step runs T tokens through every decoder block (T = the new context tokens of the
requests still in prefill plus one token per decoding request). Per block, at the
plan's format for each fused GEMM group:

  * the four GEMMs (qkv, o_proj, gate_up, down_proj), sharded by tensor parallelism
    (column-parallel N for qkv/gate_up, row-parallel K for o_proj/down_proj), priced at
    M = T from aiconfigurator's measured TensorRT-LLM tables (or a trtq profile);
  * the activation quantization in front of a group whose input format differs from the
    format its producer emits (the transition term, below);
  * attention at the KV-cache format: context (FMHA) attention over the prompt for the
    requests in prefill, generation (XQA) attention over the cached context for the
    decoding requests — measured attention tables;
  * the non-GEMM ops, priced as aiconfigurator prices them: two fused add+RMSNorm passes
    (bytes of 2h in and out per token), the SiLU·mul gate (2I/tp in, I/tp out), and once
    per step the embedding gather and the bf16 lm_head GEMM over the rows that sample;
    rotary embedding is fused into the attention kernels, sampling is not priced;
  * two custom all-reduces of h per token per block when TP > 1 (measured comm tables);
  * no per-step launch overhead: TensorRT-LLM replays decode steps as CUDA graphs and the
    measured kernel times are what the step costs (aiconfigurator's TensorRT-LLM backend
    makes the same choice); `step_overhead_ms` adds one where a deployment shows it.

The transition term. TensorRT-LLM fuses an activation's quantization into the kernel
that produces it where a fused kernel exists (add+RMSNorm+quant and SiLU·mul+quant for
FP8 and NVFP4, FMHA with FP8 output); elsewhere the quantized Linear quantizes its bf16
input with a standalone kernel. Each format's `fused_producers` (trtq/formats/) is that table, as data. A group whose
activation format its producer cannot emit pays one standalone quantize of M x K:
measured FP8 quantize tables (scale-and-cast for static per-tensor FP8; plus the amax
pass for FP8 block scaling), a bandwidth model (read bf16, write the quantized bytes,
at the GPU's achievable HBM bandwidth, plus 2 µs) for NVFP4 and INT8, marked modelled.
The term depends only on the group's own format, so step time stays a sum of per-group
costs: `StepModel.group_costs` exposes them for the planner.

Open question, to settle on a lent GPU: aiconfigurator's GEMM rows are collected through
TensorRT-LLM's torch flow (`kernel_source: torch_flow`), and FP8 at small M is slower than
bf16 in them (H100, 4096x4096, M=16: 19.2 vs 16.6 µs), which suggests a row already times
the quantize of a bf16 input. If so, the standalone quantize above double-counts where no
producer fuses (on uniform NVFP4 that is o_proj: at most 1.4% of the step in
benchmarks/step_model.py), and fused producers save what the rows include. An nsys trace of
one fp8 Linear in the torch flow answers it (needs a GPU).

Settled on CPU: a trtq profile's modelled rows (roofline, calibrated with its fitted
activation-quantize pass) carry that pass in their latency (details.activation_quantize_ns),
so `--profile` predictions and SLO plans counted the quantize twice where no producer fuses
it, and once where a producer fuses it for free. `ProfileGemms` reads such a row less its pass:
the transition term below is then the only quantize (tests/predict/test_transitions.py).

The scheduling model (in-flight batching, as aiconfigurator's TensorRT-LLM backend)
-----------------------------------------------------------------------------------
b requests are in flight; each step carries up to `ctx_tokens` context tokens (whole
prompts when ctx_tokens >= isl, a chunk of one prompt otherwise) and one decode token
for every other request. Over the life of the b requests:

  * steps_ctx = ceil(isl·b / ctx_tokens) mixed steps consume all prompts; the decode
    requests riding along are b - ceil(ctx/isl) (fewer when context outlasts decode);
  * then osl - steps_ctx decode-only steps of b requests (KV context isl + osl/2);
  * a mixed step costs the non-attention ops at ctx + decode tokens, context attention
    of ceil(ctx/isl) prompts of isl (divided by ceil(isl/ctx) chunks), and generation
    attention of the decode requests;
  * TTFT = mixed step x ceil(isl/ctx) x a queueing factor min(2 + (steps_ctx - 3)/20, 4)
    (requests arriving together wait for the prompts ahead; aiconfigurator's factor);
  * TPOT = step-weighted mean of mixed (less 3 pipeline-drain steps) and decode steps;
  * output tokens/s = b·(osl - 1) / total step time, per TP replica.

At a given concurrency the scheduler packs as many whole prompts per step as fit in
max_num_tokens (8192), keeping one request decoding: (b, ctx_tokens) are fixed, so TTFT and
TPOT are linear in the per-group costs (`linear_model` in the result). `max_throughput` is the
steady state at an infinite request rate (`trtllm-bench throughput`): the best (b,
ctx_tokens) over the same grid aiconfigurator sweeps, with b limited by `max_batch_size`
and by the KV cache.

Memory: weights at the plan's formats (scales included) + bf16 embedding, lm_head and
norms, per TP shard; activation workspace 2·max_num_tokens·h·c(tp) (TensorRT-LLM's
max_num_tokens 8192; aiconfigurator's per-TP coefficients for Llama); NCCL and CUDA
context from the system spec. The KV cache gets kv_cache_free_gpu_mem_fraction (0.9) of
what is left, less TensorRT-LLM's block-allocator reserve (1.5%) and a 2% tolerance; a
sequence holds isl + osl tokens of KV at the KV format.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from trtq.errors import InputError, UnsupportedError
from trtq.predict.architecture import PRODUCER_OF, DecoderArchitecture, GemmGroup
from trtq.predict.kernels import KV_BYTES, PROVENANCES, Answer
from trtq.predict.request import DEFAULT_MAX_BATCH_SIZE
from trtq.registry.formats import FORMATS

# Which producer kinds emit a format's activation with the quantization fused in (no extra kernel), and how
# it is quantized when none does (None: stays bf16): each format's own `fused_producers` / `activation_quant`.
QUANTIZE_LAUNCH_MS = 0.002

# TensorRT-LLM runtime defaults the memory and scheduling model use.
KV_CACHE_FREE_GPU_MEM_FRACTION = 0.9
KV_CACHE_RESERVED_FRACTION = 0.015  # block-allocator reserve (aiconfigurator's TRT-LLM constant)
KV_CACHE_TOLERANCE = 0.02
MAX_NUM_TOKENS = 8192
MAX_BATCH_SIZE = DEFAULT_MAX_BATCH_SIZE  # declared with the --max-batch-size option
ACTIVATION_COEFF = {1: 11, 2: 6.5, 4: 5, 8: 5}  # aiconfigurator's TRT-LLM Llama coefficients
MIN_ACTIVATION_BYTES = 70 * 1024 * 1024
GIB = 1 << 30


@dataclass(frozen=True)
class Workload:
    isl: int
    osl: int
    concurrency: int | None = None

    def __post_init__(self):
        if self.isl < 1:
            raise InputError(f"workload isl must be >= 1, got {self.isl}")
        if self.osl < 2:
            raise InputError(f"workload osl must be >= 2 (one token after the first), got {self.osl}")
        if self.concurrency is not None and self.concurrency < 1:
            raise InputError(f"workload concurrency must be >= 1, got {self.concurrency}")


def parse_workload(spec: str) -> Workload:
    """`isl=2048,osl=256[,concurrency=32]`, or a YAML/JSON file with those keys -> Workload."""
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") and "=" not in spec:
        return _workload_file(path, spec)
    values: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("isl", "osl", "concurrency"):
            raise InputError(f"--workload {spec!r}: expected isl=N,osl=N[,concurrency=N], got {part!r}")
        if key in values:  # 'isl=10,osl=10,isl=20': which one was meant is not ours to guess
            raise InputError(f"--workload {spec!r}: {key} is given twice")
        try:
            values[key] = int(raw)
        except ValueError:
            raise InputError(f"--workload {spec!r}: {key} must be an integer, got {raw!r}") from None
    for key in ("isl", "osl"):
        if key not in values:
            raise InputError(f"--workload {spec!r}: {key}= is required")
    return Workload(values["isl"], values["osl"], values.get("concurrency"))


def _workload_file(path: Path, spec: str) -> Workload:
    if not path.is_file():
        raise InputError(f"--workload file {spec} does not exist")
    import yaml
    from pydantic import BaseModel, ConfigDict, ValidationError

    class WorkloadFile(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        isl: int
        osl: int
        concurrency: int | None = None

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = WorkloadFile.model_validate(data)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"--workload file {spec} is not YAML/JSON: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        raise InputError(
            f"--workload file {spec}: {where}: {err['msg']} "
            "(expected isl, osl and optionally concurrency, whole numbers)"
        ) from None
    return Workload(parsed.isl, parsed.osl, parsed.concurrency)


class Cost:
    """Milliseconds by category and by provenance, plus per-group GEMM(+transition) time."""

    def __init__(self):
        self.by_category: dict[str, float] = defaultdict(float)
        self.by_provenance: dict[str, float] = defaultdict(float)

    def add(self, category: str, answer: Answer, times: float = 1.0) -> None:
        self.by_category[category] += answer.ms * times
        self.by_provenance[answer.provenance] += answer.ms * times

    def scaled(self, factor: float) -> Cost:
        out = Cost()
        for k, v in self.by_category.items():
            out.by_category[k] = v * factor
        for k, v in self.by_provenance.items():
            out.by_provenance[k] = v * factor
        return out

    def __iadd__(self, other: Cost) -> Cost:
        for k, v in other.by_category.items():
            self.by_category[k] += v
        for k, v in other.by_provenance.items():
            self.by_provenance[k] += v
        return self

    @property
    def ms(self) -> float:
        return sum(self.by_category.values())


@dataclass
class AggPoint:
    batch: int
    ctx_tokens: int
    ttft_ms: float
    tpot_ms: float
    request_latency_ms: float
    output_tokens_per_s: float  # per TP replica
    mix_step_ms: float
    decode_step_ms: float
    mix_steps: float
    decode_steps: float
    mix_steps_for_tpot: float
    ttft_factor: float  # TTFT = ttft_factor x mix_step_ms
    cost: Cost = field(repr=False)  # time of the b requests' life, by category/provenance
    mix_tokens: int = 0  # GEMM M of a mixed step
    decode_tokens: int = 0  # GEMM M of a decode-only step


class GemmSource:
    """Where GEMM latencies come from: aiconfigurator's tables, or a trtq profile."""

    def gemm(self, n: int, k: int, fmt: str, tokens: int) -> Answer:  # pragma: no cover - protocol
        raise NotImplementedError

    def has(self, fmt: str) -> bool:  # pragma: no cover - protocol
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - protocol
        raise NotImplementedError


class AicGemms(GemmSource):
    def __init__(self, kernels):
        self.kernels = kernels

    def gemm(self, n, k, fmt, tokens):
        return self.kernels.gemm(n, k, fmt, tokens)

    def has(self, fmt):
        return self.kernels.has_gemm(fmt)

    def describe(self):
        d = self.kernels.describe()
        return f"{d['package']} {d['system']} {d['framework']} {d['framework_version']}"


class StepModel:
    """A plan (one format per GEMM group, one KV format) on a GPU at a TP size."""

    def __init__(
        self,
        arch: DecoderArchitecture,
        formats: dict[str, str],
        kv_format: str,
        tp: int,
        kernels,
        gpu,
        gemms: GemmSource | None = None,
        step_overhead_ms: float = 0.0,
        max_num_tokens: int = MAX_NUM_TOKENS,
        memory_bytes: int | None = None,
    ):
        arch.check_tp(tp)
        missing = [g.name for g in arch.groups if g.name not in formats]
        if missing:
            raise InputError(f"the plan has no format for {len(missing)} groups of {arch.name}, e.g. {missing[0]}")
        self.arch, self.formats, self.kv_format, self.tp = arch, dict(formats), kv_format, tp
        self.kernels, self.gpu = kernels, gpu
        self.gemms = gemms or AicGemms(kernels)
        self.step_overhead_ms = step_overhead_ms
        self.max_num_tokens = max_num_tokens
        for fmt in sorted(set(self.formats.values())):
            if fmt not in FORMATS:
                raise InputError(f"unknown format {fmt!r} in the plan")
            gpu.require(FORMATS[fmt])
            if not self.gemms.has(fmt):
                raise UnsupportedError(
                    f"no GEMM latency for {fmt} on {gpu.name} in {self.gemms.describe()}; "
                    "give --profile FILE with that format"
                )
        if kv_format not in KV_BYTES:
            raise InputError(f"unknown KV-cache format {kv_format!r}; known: {', '.join(KV_BYTES)}")
        if kv_format == "nvfp4" and gpu.sm < 100:
            raise UnsupportedError(f"KV-cache format nvfp4 needs Blackwell (sm100+); {gpu.name} is sm{gpu.sm}")
        from trtq.predict.kernels import AIC_KV_MODES

        if kv_format not in AIC_KV_MODES:
            raise UnsupportedError(
                f"KV-cache format {kv_format}: {kernels.describe()['package']} has no attention table for it "
                f"(it measures {', '.join(AIC_KV_MODES)}); predicting it is not built yet"
            )
        self._weight_bytes: int | None = None
        self.capacity_bytes = (
            memory_bytes if memory_bytes is not None else int(kernels.system_spec["gpu"]["mem_capacity"])
        )
        # Identical (kind, format) groups cost the same: price each once.
        self._group_classes: dict[tuple[str, str], list[GemmGroup]] = defaultdict(list)
        for g in arch.groups:
            self._group_classes[(g.kind, self.formats[g.name])].append(g)

    # ---- per-op pieces ------------------------------------------------------------------
    def quantize_cost(self, fmt: str, tokens: int, k: int) -> Answer:
        kind = FORMATS[fmt].activation_quant
        if kind is None:
            return Answer(0.0, "measured")
        if kind in ("fp8_static", "fp8_dynamic"):
            measured = self.kernels.fp8_quantize(tokens, k, dynamic=kind == "fp8_dynamic")
            if measured is not None:
                return measured
        bits = FORMATS[fmt].act_bits
        bw = self.gpu.hbm_bandwidth_bytes_per_s * self.gpu.achievable.bandwidth
        return Answer(tokens * k * (2 + bits / 8) / bw * 1e3 + QUANTIZE_LAUNCH_MS, "modelled")

    def moe_cost(self, group: GemmGroup, fmt: str, tokens: int) -> Answer:
        """The experts of one block at M = tokens: the router (bf16), then each expert the router reaches runs
        its gate_up and down GEMMs on its share of the tokens. With top-k of E chosen uniformly, the expected
        number of distinct experts hit is E (1 - (1 - k/E)^T), and they share T k routed tokens."""
        e, top_k = group.experts, group.experts_per_token
        active = e * (1.0 - (1.0 - top_k / e) ** tokens)
        per_expert = max(1, math.ceil(tokens * top_k / active))
        router = self.gemms_bf16(e, group.in_features, tokens)
        total, provenances = router.ms, [router.provenance]
        for n, k in group.expert_gemms(self.tp):
            answer = self.gemms.gemm(n, k, fmt, per_expert)
            total += active * answer.ms
            provenances.append(answer.provenance)
        worst = max(provenances, key=PROVENANCES.index) if all(p in PROVENANCES for p in provenances) else "modelled"
        return Answer(total, worst)

    def group_cost(self, group: GemmGroup, fmt: str, tokens: int) -> tuple[Answer, Answer]:
        """(GEMM, transition) for one group at `fmt` and M = tokens, on one GPU."""
        if group.experts is not None:
            gemm = self.moe_cost(group, fmt, tokens)
            if PRODUCER_OF[group.kind] in FORMATS[fmt].fused_producers:
                return gemm, Answer(0.0, "measured")
            return gemm, self.quantize_cost(fmt, tokens, group.in_features)
        n, k = group.sharded(self.tp)
        gemm = self.gemms.gemm(n, k, fmt, tokens)
        if PRODUCER_OF[group.kind] in FORMATS[fmt].fused_producers:
            return gemm, Answer(0.0, "measured")
        return gemm, self.quantize_cost(fmt, tokens, k)

    def group_costs(self, tokens: int, candidates: list[str] | None = None) -> dict[str, dict[str, float]]:
        """Per group, per candidate format: ms of GEMM + transition at M = tokens. The step
        time is the sum over groups of the chosen entries plus `fixed_cost` (the planner's
        linear coefficients)."""
        out: dict[str, dict[str, float]] = {}
        cache: dict[tuple[str, str], float] = {}
        for g in self.arch.groups:
            row = {}
            for fmt in candidates or [self.formats[g.name]]:
                key = (g.kind, fmt)
                if key not in cache:
                    gemm, trans = self.group_cost(g, fmt, tokens)
                    cache[key] = gemm.ms + trans.ms
                row[fmt] = cache[key]
            out[g.name] = row
        return out

    def non_attention(self, tokens: int, logits_rows: int) -> Cost:
        """Everything of a step but attention, at M = tokens (logits for `logits_rows`)."""
        a, tp, k = self.arch, self.tp, self.kernels
        h = a.hidden_size
        cost = Cost()
        for (_kind, fmt), groups in self._group_classes.items():
            gemm, trans = self.group_cost(groups[0], fmt, tokens)
            cost.add(f"gemm_{fmt}", gemm, len(groups))
            if trans.ms:
                cost.add("format_transitions", trans, len(groups))
        cost.add("norms", k.elementwise(2 * h, 2 * h, tokens), 2 * a.num_layers)
        cost.add(
            "activation", k.elementwise(2 * a.intermediate_size // tp, a.intermediate_size // tp, tokens), a.num_layers
        )
        cost.add("embedding", k.embedding(a.vocab_size // tp, h, tokens))
        cost.add("lm_head", self.gemms_bf16(a.vocab_size // tp, h, max(1, logits_rows)))
        if tp > 1:
            cost.add("allreduce", k.allreduce(h, tp, tokens), 2 * a.num_layers + 1)
        if self.step_overhead_ms:
            cost.add("step_overhead", Answer(self.step_overhead_ms, "modelled"))
        return cost

    def gemms_bf16(self, n: int, k: int, tokens: int) -> Answer:
        return self.kernels.gemm(n, k, "bf16", tokens)

    def _attn_args(self):
        a = self.arch
        return a.num_heads // self.tp, a.kv_heads_per_gpu(self.tp), a.head_dim, self.kv_format

    def context_attention(self, prompts: int, isl: int) -> Answer:
        ans = self.kernels.context_attention(prompts, isl, *self._attn_args())
        return Answer(ans.ms * self.arch.num_layers, ans.provenance)

    def generation_attention(self, batch: int, seq: int) -> Answer:
        ans = self.kernels.generation_attention(batch, seq, *self._attn_args())
        return Answer(ans.ms * self.arch.num_layers, ans.provenance)

    # ---- steps ----------------------------------------------------------------------------
    def mix_step(self, ctx_tokens: int, gen_requests: int, isl: int, osl: int) -> Cost:
        prompts = max(1, math.ceil(ctx_tokens / isl))
        cost = self.non_attention(ctx_tokens + gen_requests, gen_requests + prompts)
        ctx = self.context_attention(prompts, isl)
        cost.add("context_attention", Answer(ctx.ms / math.ceil(isl / min(ctx_tokens, isl)), ctx.provenance))
        if gen_requests > 0:
            cost.add("generation_attention", self.generation_attention(gen_requests, isl + osl // 2 + 1))
        return cost

    def decode_step(self, batch: int, isl: int, osl: int) -> Cost:
        cost = self.non_attention(batch, batch)
        cost.add("generation_attention", self.generation_attention(batch, isl + osl // 2 + 1))
        return cost

    # ---- memory ---------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        if self._weight_bytes is None:
            self._weight_bytes = self._count_weight_bytes()
        return self._weight_bytes

    def _count_weight_bytes(self) -> int:
        a, tp = self.arch, self.tp
        total = 0
        for g in a.groups:
            fmt = FORMATS[self.formats[g.name]]
            if g.experts is not None:  # every expert is resident; the router stays bf16
                total += g.experts * sum(fmt.weight_bytes(n, k) for n, k in g.expert_gemms(tp))
                total += g.experts * g.in_features * 2
                continue
            n, k = g.sharded(tp)
            total += fmt.weight_bytes(n, k)
        bf16 = 2
        total += (a.vocab_size // tp) * a.hidden_size * bf16 * 2  # embedding + lm_head (as TRT-LLM shards them)
        total += (2 * a.num_layers + 1) * a.hidden_size * bf16  # norms
        return total

    def kv_bytes_per_token(self) -> float:
        return self.arch.kv_elements_per_token(self.tp) * KV_BYTES[self.kv_format]

    def non_kv_bytes(self) -> float:
        a = self.arch
        coeff = ACTIVATION_COEFF.get(min(self.tp, 8), 5)
        activations = max(2 * self.max_num_tokens * a.num_heads * a.head_dim * coeff, MIN_ACTIVATION_BYTES)
        misc = self.kernels.system_spec.get("misc", {})
        nccl = float(misc.get("nccl_mem", {}).get(min(self.tp, 8), 0))
        other = float(misc.get("other_mem", 0))
        return self.weight_bytes() + activations + nccl + other

    def kv_budget_bytes(self) -> float:
        free = self.capacity_bytes - self.non_kv_bytes()
        return max(
            0.0, free * KV_CACHE_FREE_GPU_MEM_FRACTION * (1 - KV_CACHE_RESERVED_FRACTION) * (1 - KV_CACHE_TOLERANCE)
        )

    def max_concurrency(self, workload: Workload) -> int:
        per_seq = (workload.isl + workload.osl) * self.kv_bytes_per_token()
        return int(self.kv_budget_bytes() // per_seq)

    # ---- scheduling -----------------------------------------------------------------------
    def agg(self, batch: int, ctx_tokens: int, workload: Workload) -> AggPoint:
        """One (b, ctx_tokens) point of in-flight batching (see the module docstring)."""
        isl, osl, b = workload.isl, workload.osl, batch
        decode_iterations = float(osl)
        steps_ctx = math.ceil(isl * b / ctx_tokens)
        if b > 1:
            if steps_ctx >= decode_iterations:
                mix_gen = max(1, int(b // (steps_ctx / decode_iterations)))
                n_mix, n_gen, n_mix_tpot, gen_batch = steps_ctx, 0.0, steps_ctx, b
            else:
                mix_gen = max(1, b - math.ceil(ctx_tokens / isl))
                n_mix, n_gen, n_mix_tpot, gen_batch = steps_ctx, decode_iterations - steps_ctx, max(1, steps_ctx - 3), b
        else:
            mix_gen, n_mix, n_gen, n_mix_tpot, gen_batch = 0, 1, max(decode_iterations - 1, 0.0), 0, 1
        mix = self.mix_step(ctx_tokens, mix_gen, isl, osl)
        dec = self.decode_step(gen_batch, isl, osl) if n_gen > 0 else Cost()
        qf = min(2 + (steps_ctx - 3) / 2 / 10, 4)
        ttft_factor = math.ceil(isl / ctx_tokens) * qf
        ttft = mix.ms * ttft_factor
        tpot_steps = n_mix_tpot + n_gen
        tpot = (mix.ms * n_mix_tpot + dec.ms * n_gen) / tpot_steps if tpot_steps > 0 else 0.0
        total = n_mix * mix.ms + n_gen * dec.ms
        life = mix.scaled(n_mix)
        life += dec.scaled(n_gen)
        return AggPoint(
            batch=b,
            ctx_tokens=ctx_tokens,
            ttft_ms=ttft,
            tpot_ms=tpot,
            request_latency_ms=ttft + tpot * (osl - 1),
            output_tokens_per_s=1000 / total * b * (osl - 1) if total > 0 else 0.0,
            mix_step_ms=mix.ms,
            decode_step_ms=dec.ms,
            mix_steps=n_mix,
            decode_steps=n_gen,
            mix_steps_for_tpot=n_mix_tpot,
            ttft_factor=ttft_factor,
            cost=life,
            mix_tokens=ctx_tokens + mix_gen,
            decode_tokens=gen_batch if n_gen > 0 else 0,
        )

    def fits(self, batch: int, workload: Workload) -> bool:
        kv = batch * (workload.isl + workload.osl) * self.kv_bytes_per_token()
        non_kv = self.non_kv_bytes()
        return non_kv + kv < self.capacity_bytes and kv <= self.kv_budget_bytes()

    @staticmethod
    def ctx_tokens_grid(isl: int, ctx_stride: int = 512) -> list[int]:
        """aiconfigurator's agg sweep of context tokens per step (chunked prefill off)."""
        max_normal, max_ctx = 8192, max(8192, isl * 2)
        stride = max(ctx_stride, max_normal // 16)
        stride_large = max(1024, stride, max_ctx // 8)
        stride, stride_large = max(isl, stride), int(math.ceil(stride_large / isl) * isl)
        grid, t = [], 0
        while True:
            t += stride if t < max_normal else stride_large
            if t > max_ctx:
                break
            grid.append(t)
        for i in (1, 2):
            if isl * i not in grid:
                grid.append(isl * i)
        return sorted(grid)

    BATCH_GRID = (
        list(range(1, 16))
        + list(range(16, 32, 4))
        + list(range(32, 64, 8))
        + list(range(64, 256, 16))
        + list(range(256, 512, 32))
        + list(range(512, 1024, 256))
        + [1024]
    )

    def scheduled_ctx_tokens(self, batch: int, isl: int) -> int:
        """Context tokens per step at a fixed concurrency, as TensorRT-LLM's scheduler packs
        them: as many whole prompts as fit in max_num_tokens (at least one), leaving at least
        one decoding request when b > 1."""
        prompts = max(1, self.max_num_tokens // isl)
        if batch > 1:
            prompts = min(prompts, batch - 1)
        return prompts * isl

    def at_concurrency(self, batch: int, workload: Workload) -> AggPoint:
        """The operating point at a fixed concurrency: fixed (b, ctx_tokens), so TTFT and TPOT
        are linear in the per-group costs at the point's GEMM M values."""
        return self.agg(batch, self.scheduled_ctx_tokens(batch, workload.isl), workload)

    def best_at(self, batch: int, workload: Workload) -> AggPoint | None:
        best = None
        for ctx in self.ctx_tokens_grid(workload.isl):
            if batch - math.ceil(ctx / workload.isl) < 0 or (batch > 1 and batch - math.ceil(ctx / workload.isl) < 1):
                break
            point = self.agg(batch, ctx, workload)
            if best is None or point.output_tokens_per_s > best.output_tokens_per_s:
                best = point
        return best

    def max_throughput(self, workload: Workload, max_batch_size: int = MAX_BATCH_SIZE) -> AggPoint | None:
        best = None
        for b in self.BATCH_GRID:
            if b > max_batch_size or not self.fits(b, workload):
                break
            point = self.best_at(b, workload)
            if point is not None and (best is None or point.output_tokens_per_s > best.output_tokens_per_s):
                best = point
        return best


def provenance_shares(cost: Cost) -> dict[str, float]:
    total = sum(cost.by_provenance.values())
    return {p: (cost.by_provenance.get(p, 0.0) / total if total else 0.0) for p in PROVENANCES}
