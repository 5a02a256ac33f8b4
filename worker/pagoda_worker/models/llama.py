"""The Llama family (Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3), written once, config-driven.

Differences between the members are config switches: q/k/v bias (Qwen2), per-head q/k RMSNorm
(Qwen3), tied embeddings, RoPE variants. Projections are fused (qkv, gate+up) so a layer issues
few large matmuls; the loader concatenates the checkpoint's separate weights into them.

Under tensor parallelism each rank builds the part its `Shards` say (sharding.py): the modules
are the same, with fewer heads and channels, and one all-reduce after o_proj and down_proj.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagoda_worker.layers.activation import silu_and_mul
from pagoda_worker.layers.attention import AttentionBackend, AttentionMetadata, KVScales
from pagoda_worker.layers.norm import RMSNorm
from pagoda_worker.layers.rotary import RotaryEmbedding
from pagoda_worker.layers.vocab_parallel import ParallelLMHead, VocabParallelEmbedding
from pagoda_worker.models.sharding import Shards
from pagoda_worker.parallel.group import SINGLE, TensorParallel


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    qkv_bias: bool
    qk_norm: bool
    tie_word_embeddings: bool
    max_position: int

    @classmethod
    def from_hf(cls, hf_config, qkv_bias: bool, qk_norm: bool) -> LlamaShape:
        head_dim = getattr(hf_config, "head_dim", None)
        return cls(
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            intermediate_size=hf_config.intermediate_size,
            num_layers=hf_config.num_hidden_layers,
            num_heads=hf_config.num_attention_heads,
            num_kv_heads=getattr(hf_config, "num_key_value_heads", None)
            or hf_config.num_attention_heads,
            head_dim=head_dim or hf_config.hidden_size // hf_config.num_attention_heads,
            rms_norm_eps=hf_config.rms_norm_eps,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
            max_position=hf_config.max_position_embeddings,
        )


class Attention(nn.Module):
    def __init__(
        self, shape: LlamaShape, rotary: RotaryEmbedding, shards: Shards, tp: TensorParallel
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            shards.num_heads,
            shards.num_kv_heads,
            shape.head_dim,
        )
        q_size, kv_size = self.num_heads * shape.head_dim, self.num_kv_heads * shape.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv_proj = nn.Linear(shape.hidden_size, q_size + 2 * kv_size, bias=shape.qkv_bias)
        self.o_proj = nn.Linear(q_size, shape.hidden_size, bias=False)
        self.q_norm = RMSNorm(shape.head_dim, shape.rms_norm_eps) if shape.qk_norm else None
        self.k_norm = RMSNorm(shape.head_dim, shape.rms_norm_eps) if shape.qk_norm else None
        self.rotary = rotary
        self.scale = shape.head_dim**-0.5
        self.kv_scales = KVScales()  # an FP8 cache's scales, from the checkpoint when it has them
        self.tp = tp

    def forward(self, positions, x, kv_cache, meta: AttentionMetadata, backend: AttentionBackend):
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:  # both or neither (qk_norm)
            q, k = self.q_norm(q), self.k_norm(k)
        out = backend.forward(
            q, k, v, positions, kv_cache, meta, self.rotary, self.scale, self.kv_scales
        )
        return self.tp.all_reduce(self.o_proj(out.reshape(out.shape[0], -1)))


class MLP(nn.Module):
    def __init__(self, shape: LlamaShape, shards: Shards, tp: TensorParallel) -> None:
        super().__init__()
        channels = len(shards.intermediate)
        self.gate_up_proj = nn.Linear(shape.hidden_size, 2 * channels, bias=False)
        self.down_proj = nn.Linear(channels, shape.hidden_size, bias=False)
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tp.all_reduce(self.down_proj(silu_and_mul(self.gate_up_proj(x))))


class DecoderLayer(nn.Module):
    def __init__(
        self, shape: LlamaShape, rotary: RotaryEmbedding, shards: Shards, tp: TensorParallel
    ) -> None:
        super().__init__()
        self.self_attn = Attention(shape, rotary, shards, tp)
        self.mlp = MLP(shape, shards, tp)
        self.input_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)

    def forward(self, positions, hidden, residual, kv_cache, meta, backend):
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, kv_cache, meta, backend)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(
        self, shape: LlamaShape, rotary: RotaryEmbedding, shards: Shards, tp: TensorParallel
    ) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(shards.vocab, shape.hidden_size, tp)
        self.layers = nn.ModuleList(
            DecoderLayer(shape, rotary, shards, tp) for _ in range(shape.num_layers)
        )
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)

    def forward(self, input_ids, positions, kv_caches, meta, backend) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(positions, hidden, residual, kv_cache, meta, backend)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    def __init__(
        self, shape: LlamaShape, rotary: RotaryEmbedding, tp: TensorParallel = SINGLE
    ) -> None:
        super().__init__()
        self.shape = shape
        self.tp = tp
        self.shards = Shards.of(shape, tp.rank, tp.size)
        self.model = LlamaModel(shape, rotary, self.shards, tp)
        self.lm_head = ParallelLMHead(self.shards.vocab, shape.vocab_size, shape.hidden_size, tp)
        if shape.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, positions, kv_caches, meta, backend) -> torch.Tensor:
        """Hidden states of every token of the step: [T, hidden]."""
        return self.model(input_ids, positions, kv_caches, meta, backend)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary (gathered from every rank)."""
        return self.lm_head(hidden)
