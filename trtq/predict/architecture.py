"""A dense decoder's blocks from its Hugging Face config, in pure Python (no torch).

`trtq.model.layers.build_layer_graph` enumerates Linear modules on the meta device and so
imports torch and transformers (seconds). The step model needs only the block structure
of the dense Llama-style families trtq ships (llama, mistral, qwen2): four fused GEMM
groups per block, named as `build_layer_graph` names them (`model.layers.3.self_attn.qkv`,
`.self_attn.o_proj`, `.mlp.gate_up`, `.mlp.down_proj`), so a plan's group names map 1:1.
A test holds this enumeration against `build_layer_graph` on the shipped configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trtq.errors import InputError, UnsupportedError

DENSE_MODEL_TYPES = ("llama", "mistral", "qwen2")

# Group kind -> the op that produces its input inside a block (for the transition term).
PRODUCER_OF = {"qkv": "norm", "o_proj": "attention", "gate_up": "norm", "down_proj": "act"}


@dataclass(frozen=True)
class GemmGroup:
    name: str            # plan group name
    kind: str            # qkv | o_proj | gate_up | down_proj
    block: int
    out_features: int    # N (full model, before tensor parallelism)
    in_features: int     # K

    def sharded(self, tp: int) -> tuple[int, int]:
        """(N, K) on one GPU: column-parallel (qkv, gate_up) split N, row-parallel split K."""
        if self.kind in ("qkv", "gate_up"):
            return self.out_features // tp, self.in_features
        return self.out_features, self.in_features // tp


@dataclass(frozen=True)
class DecoderArchitecture:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    groups: tuple[GemmGroup, ...]

    def kv_heads_per_gpu(self, tp: int) -> int:
        return -(-self.num_kv_heads // tp)

    def kv_elements_per_token(self, tp: int) -> int:
        """K and V elements per token per GPU, all layers."""
        return 2 * self.kv_heads_per_gpu(tp) * self.head_dim * self.num_layers

    def check_tp(self, tp: int) -> None:
        if tp < 1:
            raise InputError(f"--tp must be >= 1, got {tp}")
        for what, value in (("attention heads", self.num_heads), ("intermediate size", self.intermediate_size)):
            if value % tp:
                raise InputError(f"{self.name}: {what} ({value}) do not divide by --tp {tp}")


def _int(config: dict[str, Any], key: str, name: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
        raise InputError(f"{name}: config has no positive integer {key!r}")
    return value


def decoder_architecture(name: str, config: dict[str, Any]) -> DecoderArchitecture:
    model_type = config.get("model_type")
    if model_type not in DENSE_MODEL_TYPES:
        raise UnsupportedError(
            f"{name}: the step model covers dense decoders ({', '.join(DENSE_MODEL_TYPES)}); "
            f"model_type {model_type!r} is not built yet"
        )
    layers = _int(config, "num_hidden_layers", name)
    hidden = _int(config, "hidden_size", name)
    heads = _int(config, "num_attention_heads", name)
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter = _int(config, "intermediate_size", name)
    vocab = _int(config, "vocab_size", name)
    groups: list[GemmGroup] = []
    for b in range(layers):
        prefix = f"model.layers.{b}"
        groups += [
            GemmGroup(f"{prefix}.self_attn.qkv", "qkv", b, (heads + 2 * kv_heads) * head_dim, hidden),
            GemmGroup(f"{prefix}.self_attn.o_proj", "o_proj", b, hidden, heads * head_dim),
            GemmGroup(f"{prefix}.mlp.gate_up", "gate_up", b, 2 * inter, hidden),
            GemmGroup(f"{prefix}.mlp.down_proj", "down_proj", b, hidden, inter),
        ]
    return DecoderArchitecture(
        name=name, num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), groups=tuple(groups),
    )
