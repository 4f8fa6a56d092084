"""Small randomly initialized models built from a config, for tests and shape checks.

They use a byte-level tokenizer made in memory (one token per UTF-8 byte), so nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# name -> (architecture, config overrides). The random-* shapes (and vocabularies) match the paper's
# models; the byte tokenizer uses only the first 257 ids of their larger vocabularies.
RANDOM_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-gpt2": ("gpt2", {"n_layer": 3, "n_head": 4, "n_embd": 64, "n_positions": 256}),
    "tiny-llama": (
        "llama",
        {
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "max_position_embeddings": 256,
        },
    ),
    "random-gpt2": ("gpt2", {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257}),
    "random-gpt2-medium": ("gpt2", {"n_layer": 24, "n_head": 16, "n_embd": 1024, "vocab_size": 50257}),
    "random-tinyllama": (
        "llama",
        {
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "vocab_size": 32000,
        },
    ),
}


def byte_tokenizer() -> Any:
    """A GPT-2-style byte-level tokenizer: 256 byte tokens, one merge of a leading space with each other
    byte (so " Paris" starts with " P", as with real tokenizers), and an end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    space = "\u0120"  # the byte-level symbol of " "
    symbols = sorted(alphabet)
    merges = [(space, symbol) for symbol in symbols if symbol != space]
    vocab = {symbol: i for i, symbol in enumerate(symbols + [a + b for a, b in merges])}
    vocab["<|endoftext|>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    # TransformerBridge rebuilds tokenizers by name unless they already add BOS; this one has no name.
    tokenizer.init_kwargs.update(name_or_path="byte-level", add_bos_token=True)
    return tokenizer


def random_model(name: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """A seeded random HF causal LM of a named shape, and the byte tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    architecture, overrides = RANDOM_MODELS[name]
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    model: nn.Module
    if architecture == "gpt2":
        gpt2_config = GPT2Config(**{"vocab_size": len(tokenizer), **overrides})
        gpt2_config.architectures = ["GPT2LMHeadModel"]
        model = GPT2LMHeadModel(gpt2_config)
    else:
        llama_config = LlamaConfig(
            **{"vocab_size": len(tokenizer), "tie_word_embeddings": False, **overrides}
        )
        llama_config.architectures = ["LlamaForCausalLM"]
        model = LlamaForCausalLM(llama_config)
    return model.eval(), tokenizer
