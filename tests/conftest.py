"""Shared fixtures: models load once per test session."""

from __future__ import annotations

import os

import pytest
import torch

from atlas.core.models import LoadedModel, load_model
from atlas.core.pairs import Batch, make_batches, make_pairs, tokenize_facts
from atlas.spec.corpus import Relation, bundled_corpus_path, load_corpus

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def relations() -> dict[str, Relation]:
    return load_corpus(bundled_corpus_path())


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m", device="cpu")


def batches_for(model: LoadedModel, relation: Relation, n: int, batch_size: int = 8) -> list[Batch]:
    """The first n clean/corrupt pairs of a relation, batched."""
    tokenized = tokenize_facts(relation, relation.facts, model.encode, model.encode_continuation, None)
    pairs = make_pairs(tokenized, tokenized).pairs[:n]
    assert len(pairs) == n, f"only {len(pairs)} pairs in {relation.name}"
    return make_batches(pairs, batch_size, pad_id=0)
