"""FP8 weights in the loader: checkpoints stored in FP8 (compressed-tensors, as llm-compressor
saves them) load as stored, bf16 checkpoints are quantized at load with quantization="fp8", and
each variant Pagoda cannot read is refused by name. All on the CPU: FP8 tensors exist there;
only running the layers needs a GPU."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from fp8_checkpoint import (
    FP8,
    FP8_MAX,
    fp8_args,
    quantization_config,
    write_fp8_checkpoint,
    write_model,
)
from pagoda_worker.layers.attention import KVScales
from pagoda_worker.layers.fp8_linear import Fp8Linear
from pagoda_worker.layers.vocab_parallel import ParallelLMHead
from pagoda_worker.models.loader import (
    ModelLoadError,
    checkpoint_quantization,
    load_hf_config,
    load_model,
)
from torch import nn

CPU = torch.device("cpu")
BF16 = torch.bfloat16
FAMILIES = ("llama3", "qwen2", "qwen3")  # plain, q/k/v bias, q/k norm (the last two tied)
NUM_LAYERS = 2
# Our projections and the checkpoint's layers they are made of, within a decoder layer.
PARTS = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}
PROJECTIONS = [f"model.layers.{i}.{ours}" for i in range(NUM_LAYERS) for ours in PARTS]
# lm_head, every MLP's gate and up (by regex) and one attention output stay in the model dtype.
IGNORE = ("lm_head", r"re:.*mlp\.(gate|up)_proj$", "model.layers.1.self_attn.o_proj")
KEPT = {
    "model.layers.0.mlp.gate_up_proj",
    "model.layers.1.mlp.gate_up_proj",
    "model.layers.1.self_attn.o_proj",
}


def load(folder, **options):
    return load_model(folder, BF16, CPU, "safetensors", **options)[0]


def checkpoint_names(projection: str) -> list[str]:
    layer = ".".join(projection.split(".")[:3])
    ours = projection.removeprefix(f"{layer}.")
    return [f"{layer}.{part}" for part in PARTS[ours]]


def dequantized(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return weight.float() * scale.float().reshape(-1, 1)


def joined(written: dict[str, torch.Tensor], projection: str, leaf: str) -> torch.Tensor:
    return torch.cat([written[f"{name}.{leaf}"] for name in checkpoint_names(projection)])


# -- checkpoints stored in FP8 ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("weights", "static_input"), [("tensor", True), ("channel", False)])
def test_fp8_layers_hold_the_checkpoints_weights_and_scales(
    tiny_models, tmp_path, family, weights, static_input
):
    folder = tmp_path / family
    written = write_fp8_checkpoint(tiny_models[family], folder, weights, static_input, IGNORE)
    model = load(folder)
    for projection in sorted(set(PROJECTIONS) - KEPT):
        layer = model.get_submodule(projection)
        assert isinstance(layer, Fp8Linear), projection
        assert (layer.weight.dtype, layer.weight_scale.dtype) == (FP8, torch.float32)
        assert layer.weight_scale.shape == (layer.out_features,)
        names = checkpoint_names(projection)
        expected = torch.cat([dequantized(written[f"{n}.weight"], written[f"{n}.weight_scale"])
                              for n in names])  # fmt: skip
        assert torch.equal(dequantized(layer.weight, layer.weight_scale), expected), projection
        if static_input:  # the parts read the same input: the largest scale covers them all
            assert layer.input_scale == max(written[f"{n}.input_scale"].item() for n in names)
        else:
            assert layer.input_scale is None


@pytest.mark.parametrize("family", FAMILIES)
def test_ignored_layers_lm_head_and_embeddings_stay_in_the_model_dtype(
    tiny_models, tmp_path, family
):
    folder = tmp_path / family
    written = write_fp8_checkpoint(tiny_models[family], folder, ignore=IGNORE)
    model = load(folder)
    for projection in KEPT:
        layer = model.get_submodule(projection)
        assert type(layer) is nn.Linear, projection
        assert torch.equal(layer.weight, joined(written, projection, "weight").to(BF16))
    embeddings = written["model.embed_tokens.weight"].to(BF16)
    assert torch.equal(model.model.embed_tokens.weight, embeddings)
    assert model.lm_head.weight.dtype == BF16
    lm_head = written.get("lm_head.weight", written["model.embed_tokens.weight"])  # or tied
    assert torch.equal(model.lm_head.weight, lm_head.to(BF16))


def test_a_fused_layers_bias_stays_in_the_model_dtype(tiny_models, tmp_path):
    written = write_fp8_checkpoint(tiny_models["qwen2"], tmp_path / "qwen2")
    model = load(tmp_path / "qwen2")
    for layer in range(NUM_LAYERS):
        qkv = f"model.layers.{layer}.self_attn.qkv_proj"
        bias = model.get_submodule(qkv).bias
        assert torch.equal(bias, joined(written, qkv, "bias").to(BF16))


def test_kv_cache_scales_reach_their_layers_with_an_fp8_kv_cache(tiny_models, tmp_path, caplog):
    write_fp8_checkpoint(tiny_models["llama3"], tmp_path / "llama3", kv_cache=True)
    model = load(tmp_path / "llama3", fp8_kv_cache=True)
    scales = [layer.self_attn.kv_scales for layer in model.model.layers]
    assert scales == [KVScales(k=0.25, v=1.5), KVScales(k=0.5, v=2.0)]

    with caplog.at_level(logging.INFO, logger="pagoda_worker.models"):
        model = load(tmp_path / "llama3", fp8_kv_cache=False)
    assert [layer.self_attn.kv_scales for layer in model.model.layers] == [KVScales()] * 2
    assert "KV-cache scales are not used" in caplog.text


def test_a_fused_layers_parts_must_all_be_ignored_or_none(tiny_models, tmp_path):
    ignore = ("lm_head", r"re:.*mlp\.gate_proj$")
    write_fp8_checkpoint(tiny_models["llama3"], tmp_path / "llama3", ignore=ignore)
    with pytest.raises(ModelLoadError) as error:
        load(tmp_path / "llama3")
    assert str(error.value) == (
        f"{tmp_path / 'llama3'}: Pagoda fuses model.layers.0.mlp's gate_proj, up_proj into one "
        "layer, so quantization_config.ignore must list all of them or none; it lists gate_proj"
    )


def test_an_fp8_lm_head_is_refused(tiny_models, tmp_path):
    write_fp8_checkpoint(tiny_models["llama3"], tmp_path / "llama3", ignore=())
    with pytest.raises(ModelLoadError, match="stores lm_head in FP8"):
        load(tmp_path / "llama3")


# -- quantized at load ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_online_fp8_quantizes_each_projection_per_output_channel(tiny_models, family, caplog):
    plain = load(tiny_models[family])
    with caplog.at_level(logging.INFO, logger="pagoda_worker.models"):
        model = load(tiny_models[family], quantization="fp8")
    for projection in PROJECTIONS:
        layer, original = model.get_submodule(projection), plain.get_submodule(projection)
        assert isinstance(layer, Fp8Linear) and layer.input_scale is None, projection
        weight = original.weight.float()
        assert torch.equal(layer.weight_scale, weight.abs().amax(dim=1) / FP8_MAX)
        # e4m3 keeps 3 mantissa bits: rounding moves a value by at most 1/16 of itself, and by
        # half the smallest step (2^-9 of the scale) below the normal range.
        error = (dequantized(layer.weight, layer.weight_scale) - weight).abs()
        assert (error <= weight.abs() / 16 + layer.weight_scale[:, None] * 2**-10).all()
        if original.bias is not None:
            assert torch.equal(layer.bias, original.bias)
    assert type(model.lm_head) is ParallelLMHead  # not quantized
    assert torch.equal(model.lm_head.weight, plain.lm_head.weight)
    assert torch.equal(model.model.embed_tokens.weight, plain.model.embed_tokens.weight)
    assert "fp8: 8 linear layers quantized to FP8" in caplog.text


def test_layers_whose_sizes_do_not_fit_stay_and_are_named_once(tiny_models, tmp_path, caplog):
    source = tiny_models["llama3"]
    config = json.loads((source / "config.json").read_text()) | {"intermediate_size": 40}
    write_model(source, tmp_path / "odd", config, {})
    with caplog.at_level(logging.WARNING, logger="pagoda_worker.models"):
        model, _ = load_model(tmp_path / "odd", BF16, CPU, "dummy", quantization="fp8")
    for layer in model.model.layers:
        assert isinstance(layer.mlp.gate_up_proj, Fp8Linear)  # 64 -> 80
        assert type(layer.mlp.down_proj) is nn.Linear
    assert [r.getMessage() for r in caplog.records] == [
        "fp8: 2 layers stay in bfloat16, their sizes are not multiples of 16: "
        "model.layers.0.mlp.down_proj (40 -> 64), model.layers.1.mlp.down_proj (40 -> 64)"
    ]


def test_dummy_weights_of_an_fp8_checkpoints_shape_are_quantized(tiny_models, tmp_path):
    source = tiny_models["qwen3"]
    config = json.loads((source / "config.json").read_text())
    write_model(
        source, tmp_path / "fp8", config | {"quantization_config": quantization_config()}, {}
    )
    model, _ = load_model(tmp_path / "fp8", BF16, CPU, "dummy")
    assert all(isinstance(model.get_submodule(p), Fp8Linear) for p in PROJECTIONS)


# -- what Pagoda cannot read ------------------------------------------------------------------


def edited(changes: dict[str, object]) -> dict:
    """quantization_config() with the keys at dotted paths replaced."""
    config = quantization_config()
    for path, value in changes.items():
        *owners, key = path.split(".")
        target = config
        for owner in owners:
            target = target[owner]
        target[key] = value
    return config


WEIGHTS = "config_groups.group_0.weights"
INPUTS = "config_groups.group_0.input_activations"
STATIC_GROUP = quantization_config(static_input=True)["config_groups"]["group_0"]
UNSUPPORTED = {
    "block weight scales": (
        edited({f"{WEIGHTS}.strategy": "block", f"{WEIGHTS}.block_structure": [128, 128]}),
        f"{WEIGHTS}.strategy: strategy 'block' weight scales are not supported; Pagoda reads "
        "FP8 checkpoints with tensor or channel scales",
    ),
    "group weight scales": (
        edited({f"{WEIGHTS}.strategy": None, f"{WEIGHTS}.group_size": 128}),
        f"{WEIGHTS}.strategy: strategy 'group' weight scales are not supported",
    ),
    "int weights": (
        edited({f"{WEIGHTS}.type": "int"}),
        f"{WEIGHTS}.type: 'int' weights are not supported",
    ),
    "4-bit weights": (
        edited({f"{WEIGHTS}.num_bits": 4}),
        f"{WEIGHTS}.num_bits: 4-bit weights are not supported",
    ),
    "asymmetric weights": (
        edited({f"{WEIGHTS}.symmetric": False}),
        f"{WEIGHTS}.symmetric: asymmetric weights (with zero points) are not supported",
    ),
    "pack-quantized": (
        edited({"format": "pack-quantized", "config_groups.group_0.format": None}),
        "format: 'pack-quantized' is not supported",
    ),
    "int-quantized": (
        edited({"format": "int-quantized", "config_groups.group_0.format": None}),
        "format: 'int-quantized' is not supported",
    ),
    "a group's own format": (
        edited({"config_groups.group_0.format": "naive-quantized"}),
        "config_groups.group_0.format: 'naive-quantized' is not supported",
    ),
    "fp8 method": (
        {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
        "quant_method: 'fp8' checkpoints are not supported",
    ),
    "gptq": (
        {"quant_method": "gptq", "bits": 4, "group_size": 128},
        "quant_method: 'gptq' checkpoints are not supported",
    ),
    "awq": (
        {"quant_method": "awq", "bits": 4, "version": "gemm"},
        "quant_method: 'awq' checkpoints are not supported",
    ),
    "bitsandbytes": (
        {"quant_method": "bitsandbytes", "load_in_4bit": True},
        "quant_method: 'bitsandbytes' checkpoints are not supported",
    ),
    "dynamic per-tensor activations": (
        edited({INPUTS: fp8_args(strategy="tensor", dynamic=True)}),
        f"{INPUTS}.strategy: dynamic per-tensor activation scales are not supported",
    ),
    "static per-channel activations": (
        edited({INPUTS: fp8_args(strategy="channel", dynamic=False)}),
        f"{INPUTS}.strategy: static per-channel activation scales are not supported",
    ),
    "int activations": (
        edited({f"{INPUTS}.type": "int"}),
        f"{INPUTS}.type: 'int' activations are not supported",
    ),
    "output activations": (
        edited({"config_groups.group_0.output_activations": fp8_args()}),
        "config_groups.group_0.output_activations: quantized output activations are not",
    ),
    "other targets": (
        edited({"config_groups.group_0.targets": [r"re:.*proj$"]}),
        "config_groups.group_0.targets: ['re:.*proj$'] is not supported",
    ),
    "groups that differ": (
        edited({"config_groups.group_1": STATIC_GROUP}),
        "config_groups: groups quantize Linear layers' activations differently",
    ),
    "int KV cache": (
        edited({"kv_cache_scheme": fp8_args(type="int")}),
        "kv_cache_scheme.type: 'int' KV-cache scales are not supported",
    ),
    "per-head KV cache": (
        edited({"kv_cache_scheme": fp8_args(strategy="attn_head")}),
        "kv_cache_scheme.strategy: strategy 'attn_head' KV-cache scales are not supported",
    ),
    "sparse weights": (
        edited({"sparsity_config": {"format": "sparse-24-bitmask"}}),
        "sparsity_config: sparse (compressed) weights are not supported",
    ),
}


def with_quantization(source, folder, quantization: dict):
    """A model folder (no weights: its config is refused first) with this quantization_config."""
    config = json.loads((source / "config.json").read_text()) | {
        "quantization_config": quantization
    }
    write_model(source, folder, config, {})
    return folder


@pytest.mark.parametrize(("quantization", "message"), UNSUPPORTED.values(), ids=UNSUPPORTED)
def test_each_unsupported_variant_is_refused_by_name(tiny_models, tmp_path, quantization, message):
    folder = with_quantization(tiny_models["llama3"], tmp_path / "model", quantization)
    with pytest.raises(ModelLoadError) as error:
        load(folder)
    assert str(error.value).startswith(f"{folder}/config.json: quantization_config.{message}")


def test_checkpoint_quantization_names_what_a_checkpoint_holds(tiny_models, tmp_path):
    source = tiny_models["llama3"]
    assert checkpoint_quantization(load_hf_config(source)) == "none"
    fp8 = with_quantization(source, tmp_path / "fp8", quantization_config(static_input=True))
    assert checkpoint_quantization(load_hf_config(fp8)) == "fp8"
    gptq = with_quantization(source, tmp_path / "gptq", UNSUPPORTED["gptq"][0])
    with pytest.raises(ModelLoadError, match="'gptq' checkpoints are not supported"):
        checkpoint_quantization(load_hf_config(gptq))
