"""The analysis job: one relation-level analysis (a kind of atlas.spec.analyses: hallucination, icl, lens) of
a catalogued relation in one model, found in the catalogue or computed and stored by
`atlas.analyses.analyze_and_store` (as `atlas analyze ...` does inline)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

from atlas.db import CatalogueError, NotCatalogued
from atlas.db.jobs import InvalidJob, check_relations
from atlas.spec.analyses import AnalysisError, make_params
from atlas.tasks.base import JobContext, JobRequest, Stored

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class AnalysisRequest(JobRequest):
    """The `analysis` (hallucination, icl or lens) of `relation` in `model`, with these parameters (the
    kind's fields; missing ones take their defaults)."""

    kind: ClassVar[str] = "analysis"
    model: str
    relation: str
    analysis: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "relation": self.relation,
            "analysis": self.analysis,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(data["model"], data["relation"], data["analysis"], dict(data["params"]))

    def normalized(self) -> Self:
        """Stripped names and every parameter given (defaults filled in), so equal requests key equal."""
        try:
            params = asdict(make_params(self.analysis, self.params))
        except AnalysisError:
            params = dict(self.params)  # validate() says what is wrong
        return replace(self, model=self.model.strip(), relation=self.relation.strip(), params=params)

    def validate(self, session: Session | None = None) -> None:
        if not self.model.strip():
            raise InvalidJob("model must be given", field="model")
        if not self.relation.strip():
            raise InvalidJob("relation must be given", field="relation")
        params = make_params(self.analysis, self.params)  # AnalysisError naming the kind or the parameter
        if session is None:
            return
        check_relations(session, [self.relation])
        if self.analysis == "lens" and params.circuit_id is not None:
            from atlas.db.analyses import lens_circuit

            try:
                lens_circuit(session, self.model, self.relation, params.circuit_id)
            except CatalogueError as error:
                if isinstance(error, NotCatalogued):
                    raise  # an unknown circuit: 404, as an unknown relation is
                raise InvalidJob(str(error), field="params.circuit_id") from None

    def stored(self, session: Session) -> Stored:
        from atlas.analyses import resolved
        from atlas.db.analyses import find_analysis

        params, _ = resolved(
            session, self.analysis, self.model, self.relation, make_params(self.analysis, self.params)
        )
        try:
            found = find_analysis(session, self.analysis, self.model, self.relation, asdict(params))
        except CatalogueError:  # the model's name is ambiguous in the catalogue: the worker resolves it
            found = None
        return Stored({"analysis_id": found}, found is not None, f"analysis {found}")

    def run(self, context: JobContext) -> None:
        """The analysis found in the catalogue or computed and stored."""
        from atlas.analyses import analyze_and_store
        from atlas.db.store import load_relation

        relation = load_relation(context.engine, self.relation)
        context.progress(self.relation, 0)(0, 0)  # the job's current relation (and a check it is still ours)
        analysis_id, _ = analyze_and_store(self.analysis, self.model, relation, self.params, context.engine)
        context.analysis_ids.append(analysis_id)
        context.relation_done(self.relation, 1)
