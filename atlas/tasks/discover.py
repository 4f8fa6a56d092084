"""The discovery job: circuits of catalogued relations in one model, with one set of parameters, each found in
the catalogue or computed and stored by `atlas.jobs.discover_and_store` (as `atlas discover` does inline)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

from atlas.db.jobs import InvalidJob, check_relations, existing_circuits
from atlas.spec.errors import Invalid
from atlas.spec.params import DiscoveryParams
from atlas.tasks.base import JobContext, JobRequest, Stored

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class DiscoveryRequest(JobRequest):
    """Circuits of these relations (already in the catalogue) in this model, with these parameters."""

    kind: ClassVar[str] = "discover"
    model: str
    relations: tuple[str, ...]
    params: DiscoveryParams

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "relations": list(self.relations), "params": asdict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(data["model"], tuple(data["relations"]), DiscoveryParams(**data["params"]))

    def normalized(self) -> Self:
        return replace(self, model=self.model.strip(), relations=tuple(dict.fromkeys(self.relations)))

    def validate(self, session: Session | None = None) -> None:
        if not self.model.strip():
            raise InvalidJob("model must be given", field="model")
        if not self.relations:
            raise InvalidJob("relations must name at least one relation", field="relations")
        try:
            self.params.validate()
        except Invalid as error:
            raise InvalidJob(str(error), field=error.field) from None
        if session is not None:
            check_relations(session, self.relations)

    def stored(self, session: Session) -> Stored:
        found = existing_circuits(session, self.model, self.relations, self.params)
        text = "circuit " + ", ".join(map(str, found.values()))
        return Stored({"existing_circuits": found}, len(found) == len(self.relations), text)

    @property
    def relations_total(self) -> int:
        return len(self.relations)

    def run(self, context: JobContext) -> None:
        """The circuit of each relation, found in the catalogue or computed and stored."""
        from atlas.db.store import load_relation
        from atlas.jobs import cached_model, discover_and_store

        self.params.validate()
        model = cached_model(self.model)  # loaded once per process; a bad model fails the job here
        for done, name in enumerate(self.relations):
            relation = load_relation(context.engine, name)
            progress = context.progress(name, done)
            progress(0, 0)
            stored = discover_and_store(model.name, relation, self.params, progress, context.engine)
            context.circuit_ids.append(stored.circuit_id)
            context.relation_done(name, done + 1)
