"""How much FP8 changes a real model's next-token distributions: stories260K cast to bf16, over a
few thousand positions of text it wrote itself, for FP8 weights, an FP8 KV cache, and both.

Printed per variant: top-1 agreement with bf16 (the same most likely next token) and the mean
KL divergence KL(bf16 || variant) in nats. The text is 16 stories of 256 tokens sampled from the
bf16 model (temperature 1, seeded); every variant scores the same tokens in one prefill per story,
through the engine's model, attention backend and paged KV cache. Needs a GPU of compute
capability ≥ 8.9 (tests/kernels/test_fp8_quality.py holds the thresholds).

    python bench/fp8_quality.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.extend(  # the checkout's packages, uninstalled
    str(Path(__file__).resolve().parents[1] / root)
    for root in ("", "worker", "gateway", "operator")
)

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.layers.attention import AttentionMetadata
from pagoda_worker.layers.backends import select_attention_backend
from pagoda_worker.layers.fp8_linear import FP8
from pagoda_worker.models.loader import load_model
from pagoda_worker.models.source import DEFAULT_MODEL

BLOCK_SIZE = 16
VARIANTS = {  # name: (weights quantization, KV cache in FP8)
    "fp8 weights": ("fp8", False),
    "fp8 kv cache": ("none", True),
    "fp8 weights + kv cache": ("fp8", True),
}


@dataclass(frozen=True)
class Agreement:
    top1: float  # fraction of positions whose most likely next token is bf16's
    mean_kl: float  # KL(bf16 || variant), nats, averaged over positions
    positions: int


def sample_texts(num: int, length: int, device: torch.device) -> list[list[int]]:
    """Stories the bf16 model writes from its BOS token, one seed each."""
    engine = LLMEngine(EngineConfig(model=str(DEFAULT_MODEL), dtype="bfloat16", device=str(device)))
    bos = engine.tokenizer.bos_token_id
    for seed in range(num):
        params = SamplingParams(temperature=1.0, max_tokens=length, ignore_eos=True, seed=seed)
        engine.add_request([bos], params)
    texts = []
    while engine.has_unfinished_requests():
        texts += [[bos, *o.outputs[0].token_ids] for o in engine.step() if o.finished]
    return texts


@torch.inference_mode()
def next_token_logprobs(
    texts: list[list[int]], quantization: str, fp8_kv: bool, device: torch.device
) -> torch.Tensor:
    """[positions, vocab] float32 log-probabilities of every text's next tokens."""
    model, _ = load_model(
        DEFAULT_MODEL, torch.bfloat16, device, "safetensors", quantization, fp8_kv_cache=fp8_kv
    )
    backend = select_attention_backend("auto", device)
    shape = model.shape
    rows = []
    for text in texts:
        n = len(text)
        blocks = -(-n // BLOCK_SIZE)
        caches = [
            torch.zeros(2, blocks, BLOCK_SIZE, shape.num_kv_heads, shape.head_dim,
                        dtype=FP8 if fp8_kv else torch.bfloat16, device=device)
            for _ in range(shape.num_layers)
        ]  # fmt: skip

        def i32(values):
            return torch.tensor(values, dtype=torch.int32, device=device)

        meta = AttentionMetadata(
            slot_mapping=i32(range(n)), query_start_loc=i32([0, n]), seq_lens=i32([n]),
            block_tables=i32([list(range(blocks))]), max_query_len=n, max_seq_len=n,
            num_decodes=0,
        )  # fmt: skip
        ids = torch.tensor(text, device=device)
        hidden = model(ids, torch.arange(n, device=device), caches, meta, backend)
        rows.append(torch.log_softmax(model.compute_logits(hidden[:-1]).float(), dim=-1))
    return torch.cat(rows)


def agreement(reference: torch.Tensor, variant: torch.Tensor) -> Agreement:
    top1 = (reference.argmax(-1) == variant.argmax(-1)).float().mean().item()
    kl = (reference.exp() * (reference - variant)).sum(-1).mean().item()
    return Agreement(top1, kl, reference.shape[0])


def measure(
    device: torch.device, variants: list[str], num_texts: int = 16, length: int = 256
) -> dict[str, Agreement]:
    texts = sample_texts(num_texts, length, device)
    reference = next_token_logprobs(texts, "none", False, device)
    return {
        name: agreement(reference, next_token_logprobs(texts, *VARIANTS[name], device))
        for name in variants
    }


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/fp8_quality.py needs a CUDA GPU of compute capability ≥ 8.9", file=sys.stderr)
        return 2
    results = measure(torch.device("cuda"), list(VARIANTS))
    print(f"stories260K in bf16 on {torch.cuda.get_device_name()}, "
          f"{next(iter(results.values())).positions} positions")  # fmt: skip
    print(f"{'variant':26}{'top-1 agreement':>17}{'mean KL (nats)':>16}")
    for name, result in results.items():
        print(f"{name:26}{result.top1:17.4f}{result.mean_kl:16.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
