"""Model names told without torch (atlas.spec.model_names): the built-in names are exactly the loader's; a
Hugging Face id counts as loadable when its config is in the local cache; with HF_HUB_OFFLINE set, a model
that is not there is refused at once, and `load_model` fails fast on it with one clear error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from atlas.core.models import OFFLINE_MODELS as LOADER_OFFLINE
from atlas.core.models import ModelLoadError, known_model_names, load_model
from atlas.core.tiny import RANDOM_MODELS as LOADER_RANDOM
from atlas.spec.model_names import BUILT_IN, OFFLINE_MODELS, RANDOM_MODELS, unavailable


def test_the_built_in_names_are_the_loaders() -> None:
    assert tuple(LOADER_OFFLINE) == OFFLINE_MODELS and tuple(LOADER_RANDOM) == RANDOM_MODELS
    assert list(BUILT_IN) == known_model_names()


def test_a_cached_hub_id_is_loadable_and_an_uncached_one_is_not_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "models--some-org--small-lm" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--some-org--small-lm" / "refs").mkdir()
    (tmp_path / "models--some-org--small-lm" / "refs" / "main").write_text("abc123")
    assert unavailable("some-org/small-lm", cache_dir=tmp_path) is None
    reason = unavailable("some-org/other-lm", cache_dir=tmp_path)
    assert reason is not None and "HF_HUB_OFFLINE" in reason
    assert "nor a valid Hugging Face id" in (unavailable("two words", cache_dir=tmp_path) or "")
    assert unavailable("tiny-llama", cache_dir=tmp_path) is None


def test_load_model_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"cannot load model 'some-org/missing-lm': .*HF_HUB_OFFLINE"):
        load_model("some-org/missing-lm", device="cpu")
    assert time.monotonic() - started < 2
