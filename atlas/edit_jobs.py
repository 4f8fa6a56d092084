"""What one edit does, start to end, for the inline `atlas edit` and for edit jobs (atlas.tasks.edit): look
the edit up in the catalogue, else edit a copy of the (cached, never written) model, measure the outcome,
read the new object through the logit lens, diff the circuits of the edited fact and of a few neighbours
before and after, and store it all in one transaction (atlas.db.edits)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atlas.db.edits import ComponentChange, EditRecord, EditSpec, validate_edit_request
from atlas.spec.corpus import Fact, Relation

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from atlas.core.discover import FactCircuit
    from atlas.core.editing import CircuitDiff
    from atlas.core.models import LoadedModel

Progress = Callable[[int, int], None]


@dataclass
class StoredEdit:
    edit_id: int
    reused: bool  # already in the catalogue: nothing was computed


def run_edit(engine: Engine, request: EditSpec, progress: Progress | None = None) -> StoredEdit:
    """The edit of this exact request from the catalogue, or computed and stored. Bad input raises
    EditRequestError / JobError (checked in the catalogue) or EditError (checked on the model) before any
    copy of the model is made; nothing is stored then."""
    from atlas.core.discover import DiscoveryError, fact_circuit
    from atlas.core.editing import EditParams, EditRequest, apply_edit, check_request
    from atlas.db.edits import find_edit, store_edit
    from atlas.db.store import ModelInfo, default_code_version, load_relation, transaction
    from atlas.jobs import cached_model

    request = request.normalized()
    version = default_code_version()
    key = request.key(version)
    with transaction(engine) as session:
        validate_edit_request(session, request)
    stored = find_edit(engine, request.model, key)
    if stored is not None:
        return StoredEdit(stored, reused=True)

    clock = time.perf_counter()
    model = cached_model(request.model)
    relation = load_relation(engine, request.relation)
    old_object = next(f.object for f in relation.facts if f.subject == request.subject)
    prompt = relation.prompt(request.subject, request.discovery.template)
    edit_request = EditRequest(prompt, request.subject, request.new_object, old_object)
    params = EditParams(**request.edit)
    check_request(model, edit_request, params)  # before any copy: a bad layer, method or object fails here
    neighbours = _neighbour_facts(relation, request)
    total = 3 + 2 * (1 + len(neighbours))
    steps = _Steps(progress, total)
    seconds: dict[str, float] = {"load": time.perf_counter() - clock}

    clock = time.perf_counter()
    result = apply_edit(model, edit_request, params)
    seconds["edit"] = time.perf_counter() - clock
    steps.advance()
    clock = time.perf_counter()
    outcome = _outcome(engine, model, result.model, relation, edit_request)
    seconds["outcome"] = time.perf_counter() - clock
    steps.advance()
    clock = time.perf_counter()
    lens = _lens(result.model, edit_request)
    seconds["lens"] = time.perf_counter() - clock
    steps.advance()

    clock = time.perf_counter()

    def fact_diff(before: Fact, after: Fact) -> tuple[CircuitDiff | None, list[ComponentChange]]:
        """Circuits of `before` in the original model and of `after` in the edited one, diffed; None when
        the fact cannot be paired with a partner of the same prompt length."""
        found = []
        try:
            for fact, which in ((before, model), (after, result.model)):
                found.append(fact_circuit(which, relation, fact, request.discovery))
                steps.advance()
        except DiscoveryError:
            for _ in range(2 - len(found)):
                steps.advance()
            return None, []
        return _diff(*found)

    edited_diff, components = fact_diff(
        Fact(request.subject, old_object), Fact(request.subject, request.new_object)
    )
    neighbour_diffs = []
    for fact in neighbours:
        diff_of, _ = fact_diff(fact, fact)
        if diff_of is not None:
            neighbour_diffs.append({"subject": fact.subject, "object": fact.object, **diff_of.to_dict()})
    seconds["circuits"] = time.perf_counter() - clock
    update = {k: v for k, v in result.to_dict().items() if k not in ("request", "params", "model")}
    record = EditRecord(
        request=request,
        key=key,
        model=ModelInfo.of(model),
        prompt=prompt,
        old_object=old_object,
        params={
            **result.params.to_dict(),
            "discovery": request.to_dict()["discovery"],
            "n_neighbours": request.n_neighbours,
        },
        edited_sha256=result.edited_sha256,
        outcome=outcome,
        update=update,
        lens=lens,
        # The edited fact's diff as CircuitDiff.to_dict() (the web page draws it), plus the neighbours'.
        diff=None if edited_diff is None else {**edited_diff.to_dict(), "neighbours": neighbour_diffs},
        seconds=seconds,
        components=components,
        code_version=version,
    )
    edit_id, reused = store_edit(engine, record)
    return StoredEdit(edit_id, reused)


class _Steps:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None:
            progress(0, total)

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _neighbour_facts(relation: Relation, request: EditSpec) -> list[Fact]:
    """`n_neighbours` other facts of the relation (seeded sample), for circuits before and after."""
    others = [f for f in dict.fromkeys(relation.facts) if f.subject != request.subject]
    return random.Random(request.discovery.seed).sample(others, min(request.n_neighbours, len(others)))


def _outcome(
    engine: Engine, original: LoadedModel, edited: LoadedModel, relation: Relation, request: Any
) -> dict[str, Any]:
    from atlas.core.editing import edit_outcome, probes_for
    from atlas.db.edits import other_relation_names
    from atlas.db.store import load_relation

    others = [load_relation(engine, name) for name in other_relation_names(engine, relation.name)]
    return edit_outcome(original, edited, request, probes_for(relation, request, others)).to_dict()


def _lens(edited: LoadedModel, request: Any) -> list[dict[str, Any]]:
    """The new object's first token through the logit lens of every head and MLP of the edited model."""
    from atlas.core.editing.base import object_ids
    from atlas.core.logit_lens import component_ranks

    first = object_ids(edited, request.target_new)[0]
    return [row.to_dict() for row in component_ranks(edited, request.prompt, first)]


def _diff(before: FactCircuit, after: FactCircuit) -> tuple[CircuitDiff, list[ComponentChange]]:
    """The circuit diff (with edge score changes at edge level) and the heads and MLPs gained, lost or kept,
    with their node scores before and after."""
    from atlas.core.editing import circuit_diff
    from atlas.db.store import node_scores

    edge = before.level == "edge"
    diff = circuit_diff(
        before.circuit,
        after.circuit,
        before.scores if edge else None,
        after.scores if edge else None,
    )
    graph = before.circuit.graph
    score_before = dict(zip(graph.node_names, node_scores(graph, before.scores, before.level), strict=True))
    score_after = dict(zip(graph.node_names, node_scores(graph, after.scores, after.level), strict=True))
    changes = [
        ComponentChange(name, change, score_before.get(name), score_after.get(name))
        for change, names in (
            ("gained", diff.nodes_gained),
            ("lost", diff.nodes_lost),
            ("kept", diff.nodes_kept),
        )
        for name in names
        if name not in ("input", "logits")
    ]
    return diff, changes
