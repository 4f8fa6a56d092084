"""Head roles (attention from the last position) and logit-lens summaries; roles known by construction."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest
import torch

from atlas.core.attribution import edge_scores, graph_of
from atlas.core.circuit import top_n
from atlas.core.component_lens import ComponentLens, LensSummary, relation_lens
from atlas.core.metrics import object_logprob
from atlas.core.models import LoadedModel, load_model
from atlas.core.roles import (
    FUNCTION_WORDS,
    HeadRoles,
    PromptSpans,
    RoleThresholds,
    circuit_heads,
    head_roles,
    last_position_attention,
    pattern_hook,
    prompt_spans,
    relation_head_roles,
)
from atlas.spec.corpus import Relation
from tests.conftest import batches_for


def _spans(
    model: LoadedModel, relation: Relation, n: int, template: str | int | None = None
) -> list[PromptSpans]:
    return [prompt_spans(model, relation, fact, template) for fact in relation.facts[:n]]


def test_prompt_spans_locate_the_subject_and_the_relation_words(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    decode = tiny_llama.tokenizer.decode
    for fact in relation.facts[:5]:
        spans = prompt_spans(tiny_llama, relation, fact, "The capital of {} is the city of")
        assert list(spans.token_ids) == tiny_llama.encode(spans.prompt)
        assert decode([spans.token_ids[i] for i in spans.subject]).strip() == fact.subject
        words = decode([spans.token_ids[i] for i in spans.relation]).split()
        assert "".join(words) == "capitalcity"  # content words only: no "The", "of", "is", "the"
        assert set(spans.subject).isdisjoint(spans.relation)
        assert len(spans.token_ids) - 1 not in spans.relation


def test_prompt_spans_shift_past_a_bos_token(tiny_llama, relations) -> None:
    with_bos = dataclasses.replace(tiny_llama, prepend_bos=True)
    fact = relations["country_capital_city"].facts[0]
    plain = prompt_spans(tiny_llama, relations["country_capital_city"], fact, 2)
    shifted = prompt_spans(with_bos, relations["country_capital_city"], fact, 2)
    assert shifted.token_ids == (tiny_llama.tokenizer.bos_token_id, *plain.token_ids)
    assert shifted.subject == tuple(i + 1 for i in plain.subject)
    assert shifted.relation == tuple(i + 1 for i in plain.relation)


def test_function_words_are_never_relation_words() -> None:
    assert {"the", "of", "is", "a", "in", "what"} <= FUNCTION_WORDS
    assert "capital" not in FUNCTION_WORDS


@pytest.mark.parametrize(
    ("subject", "relation", "role"),
    [
        (0.9, 0.0, "mover"),
        (0.0, 0.5, "relation"),
        (0.3, 0.3, "mix"),
        (0.29, 0.1, "other"),
        (0.1, 0.29, "other"),
    ],
)
def test_thresholds_classify(subject: float, relation: float, role: str) -> None:
    assert RoleThresholds(mover=0.3, relation=0.3).classify(subject, relation) == role


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="mover threshold"):
        RoleThresholds(mover=0.0)
    with pytest.raises(ValueError, match="relation threshold"):
        RoleThresholds(relation=1.5)


def test_a_head_with_zeroed_queries_attends_uniformly() -> None:
    """Zero query weights give uniform attention over the causal prefix: the measured mass on a span is then
    exactly its share of the prompt's tokens."""
    model = load_model("tiny-gpt2", device="cpu")  # a fresh copy: its weights are changed below
    from atlas.spec.corpus import bundled_corpus_path, load_corpus

    relation = load_corpus(bundled_corpus_path())["country_capital_city"]
    d_head = model.d_model // model.n_heads
    attention = model.hf_model.transformer.h[1].attn.c_attn  # columns: q of every head, then k, then v
    with torch.no_grad():
        attention.weight[:, 2 * d_head : 3 * d_head] = 0.0
        attention.bias[2 * d_head : 3 * d_head] = 0.0
    spans = _spans(model, relation, 6)
    subject, related = last_position_attention(model, spans, batch_size=4)  # padded batches, uneven lengths
    expected_subject = sum(len(s.subject) / len(s.token_ids) for s in spans) / len(spans)
    expected_relation = sum(len(s.relation) / len(s.token_ids) for s in spans) / len(spans)
    assert float(subject[1, 2]) == pytest.approx(expected_subject, abs=1e-5)
    assert float(related[1, 2]) == pytest.approx(expected_relation, abs=1e-5)
    assert float(subject[1, 1]) != pytest.approx(expected_subject, abs=1e-5)  # the others are untouched


def _set_last_row(spans: Sequence[PromptSpans], targets: dict[int, str]) -> object:
    """A pattern hook that, for each head in `targets`, puts the last position's attention all on the subject
    ("subject"), all on the relation words ("relation"), half on each ("both") or all on token 0 ("first")."""

    def hook(pattern: torch.Tensor, hook: object) -> torch.Tensor:
        pattern = pattern.clone()
        for row, item in enumerate(spans):
            last = len(item.token_ids) - 1
            for head, kind in targets.items():
                weights = torch.zeros(pattern.shape[-1])
                if kind in ("subject", "both"):
                    weights[list(item.subject)] += 1.0 / len(item.subject)
                if kind in ("relation", "both"):
                    weights[list(item.relation)] += 1.0 / len(item.relation)
                if kind == "first":
                    weights[0] = 1.0
                pattern[row, head, last] = weights / weights.sum()
        return pattern

    return hook


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_roles_of_heads_with_hand_set_attention(
    fixture: str, request: pytest.FixtureRequest, relations
) -> None:
    model: LoadedModel = request.getfixturevalue(fixture)
    spans = _spans(model, relations["country_capital_city"], 4, "The capital of {} is the city of")
    targets = {0: "subject", 1: "relation", 2: "both", 3: "first"}
    nodes = ["input", "a1.h0", "a1.h1", "m1", "a1.h2", "a1.h3", "logits"]
    # Hooks added with `hooks()` run before the ones head_roles adds, so it reads the overwritten pattern.
    with model.bridge.hooks(fwd_hooks=[(pattern_hook(1), _set_last_row(spans, targets))]):
        roles = head_roles(model, nodes, spans, RoleThresholds(mover=0.3, relation=0.3))
    by_name = roles.by_name()
    assert [h.name for h in roles.heads] == ["a1.h0", "a1.h1", "a1.h2", "a1.h3"]
    assert by_name["a1.h0"].role == "mover" and by_name["a1.h0"].subject_attention == pytest.approx(1.0)
    assert by_name["a1.h1"].role == "relation" and by_name["a1.h1"].relation_attention == pytest.approx(1.0)
    assert by_name["a1.h2"].role == "mix"
    assert by_name["a1.h2"].subject_attention == pytest.approx(0.5)
    assert by_name["a1.h2"].relation_attention == pytest.approx(0.5)
    assert by_name["a1.h3"].role == "other" and by_name["a1.h3"].subject_attention == pytest.approx(0.0)
    assert roles.counts() == {"mover": 1, "relation": 1, "mix": 1, "other": 1}
    # A stricter threshold turns the half-and-half head into "other".
    with model.bridge.hooks(fwd_hooks=[(pattern_hook(1), _set_last_row(spans, targets))]):
        strict = head_roles(model, nodes, spans, RoleThresholds(mover=0.6, relation=0.6))
    assert strict.by_name()["a1.h2"].role == "other"
    assert strict.by_name()["a1.h0"].role == "mover"


def test_roles_result_is_json_and_records_thresholds(tiny_llama, relations) -> None:
    roles = relation_head_roles(
        tiny_llama,
        relations["country_language"],
        ["a0.h1", "a2.h3", "m0"],
        thresholds=RoleThresholds(0.2, 0.4),
    )
    data = json.loads(json.dumps(roles.to_dict()))
    assert data["thresholds"] == {"mover": 0.2, "relation": 0.4}
    assert data["n_prompts"] == len(relations["country_language"].facts)
    assert [h["name"] for h in data["heads"]] == ["a0.h1", "a2.h3"]
    assert sum(data["counts"].values()) == 2
    assert all(0.0 <= h["subject_attention"] <= 1.0 for h in data["heads"])
    assert isinstance(roles, HeadRoles)


def test_circuit_heads_parses_head_names_only() -> None:
    assert circuit_heads(["input", "a0.h1", "m3", "a12.h10", "a1.h2<q>", "logits"]) == [(0, 1), (12, 10)]


def test_head_roles_need_prompts(tiny_llama) -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        head_roles(tiny_llama, ["a0.h0"], [])


def test_lens_summary_matches_the_model_output_and_filters_nodes(tiny_llama, relations) -> None:
    relation = relations["country_capital_city"]
    summary = relation_lens(
        tiny_llama, relation, ["input", "a0.h1", "m2", "logits"], facts=relation.facts[:3]
    )
    assert [c.name for c in summary.components] == ["a0.h1", "m2"]
    assert [c.name for c in summary.residual] == ["input", "r0", "r1", "r2"]
    # The residual after the last layer is the model's own prediction.
    ranks = []
    for fact in relation.facts[:3]:
        ids = tiny_llama.encode(relation.prompt(fact.subject))
        target = tiny_llama.encode_continuation(" " + fact.object)[0]
        final = tiny_llama.bridge(torch.tensor([ids]), return_type="logits")[0, -1]
        ranks.append(int((final > final[target]).sum()) + 1)
    last = summary.residual[-1]
    assert last.best_rank == min(ranks)
    assert last.mean_rank == pytest.approx(sum(ranks) / 3)
    json.dumps(summary.to_dict())


def test_lens_summary_surfacing_points() -> None:
    def row(name: str, layer: int, kind: str, median: float) -> ComponentLens:
        return ComponentLens(name, layer, kind, median, median, int(median), float(median == 1), 0.1)

    summary = LensSummary(
        2,
        [
            row("a0.h0", 0, "head", 40),
            row("m0", 0, "mlp", 3),
            row("a1.h0", 1, "head", 1),
            row("m1", 1, "mlp", 1),
        ],
        [row("input", -1, "input", 90), row("r0", 0, "resid", 2), row("r1", 1, "resid", 1)],
    )
    assert summary.first_top1 is not None and summary.first_top1.name == "a1.h0"
    assert summary.best is not None and summary.best.name == "a1.h0"
    assert summary.first_top1_layer == 1
    assert LensSummary(0).first_top1 is None and LensSummary(0).best is None


@pytest.mark.slow
def test_roles_of_a_real_circuit_on_smollm2(smollm2, relations) -> None:
    relation = relations["country_capital_city"]
    scores = edge_scores(
        smollm2, batches_for(smollm2, relation, 4, batch_size=4), object_logprob, method="eap"
    )
    circuit = top_n(graph_of(smollm2), scores, 200)
    roles = relation_head_roles(smollm2, relation, circuit.nodes, facts=relation.facts[:8])
    heads = circuit_heads(circuit.nodes)
    assert len(roles.heads) == len(heads) > 0
    assert sum(roles.counts().values()) == len(heads)
    # The paper's finding, which SmolLM2 shares: a capital circuit has heads that move the subject.
    assert roles.counts()["mover"] >= 1
    movers = [h for h in roles.heads if h.role == "mover"]
    assert all(h.subject_attention >= 0.3 for h in movers)
