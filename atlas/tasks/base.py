"""What every job kind provides (`JobRequest`), what of a request the catalogue may already hold (`Stored`),
and what a job's work sees while it runs (`JobContext`). Torch-free."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from atlas.spec.keys import request_key

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Stored:
    """What of a request the catalogue already holds. `found` is kind-specific JSON with the same keys
    whether or not anything was found (`existing_circuits`, `edit_id`, `analysis_id`); `complete`: all of
    it, so nothing is queued; `text` names it for people (`circuit 3, 4`)."""

    found: dict[str, Any]
    complete: bool = False
    text: str = ""


class JobRequest(ABC):
    """What a job of one kind asks. Subclasses are frozen dataclasses with a `model` field, registered in
    atlas.tasks.registry under `kind` (16 characters at most: the jobs table's column)."""

    kind: ClassVar[str]
    model: str

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The request as the jobs table stores it (JSON)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The request from its stored JSON (KeyError, TypeError or ValueError when it is malformed)."""

    def normalized(self) -> Self:
        """The request with equal requests written differently made equal (stripped names, dropped
        duplicates, defaults filled in). Never raises: validate() reports what is wrong."""
        return self

    def key(self) -> str:
        """The request's key: equal for equal requests, stable across processes and versions."""
        return request_key(self.kind, self.normalized().to_dict())

    @abstractmethod
    def validate(self, session: Session | None = None) -> None:
        """Check a normalized request, raising atlas.spec.errors' typed errors (Invalid naming the field,
        NotFound for an unknown relation): alone without a session, against the catalogue with one."""

    def stored(self, session: Session) -> Stored:
        """What of this (valid, normalized) request the catalogue already holds."""
        return Stored({})

    @property
    def relations_total(self) -> int:
        """How many relations the job's progress counts (jobs.relations_total)."""
        return 1

    @abstractmethod
    def run(self, context: JobContext) -> None:
        """Do the work with the plain function the inline command calls (importing torch then, not before),
        reporting progress and collecting what is stored in `context`."""


class JobLost(RuntimeError):
    """This worker no longer holds the job (another took it over after a stall): stop quietly."""


@dataclass
class JobContext:
    """What a job's work needs besides its request: where to report, and whether the job is still this
    worker's. Results are collected here as they are stored, so a failure keeps what was done."""

    engine: Engine
    job_id: int
    worker: str
    lost: threading.Event  # set when another worker has taken the job over
    circuit_ids: list[int] = field(default_factory=list)
    edit_ids: list[int] = field(default_factory=list)
    analysis_ids: list[int] = field(default_factory=list)

    def progress(self, relation: str, done: int) -> Callable[[int, int], None]:
        """A facts-scored callback for one relation (the `done`-th) that writes the job's progress at most
        twice a second and stops the work when the job was taken over."""
        from atlas.db.jobs import report_progress

        last = [0.0]

        def update(facts_done: int, facts_total: int) -> None:
            if self.lost.is_set():
                raise JobLost(f"job {self.job_id} was taken over by another worker")
            moment = time.monotonic()
            if moment - last[0] >= 0.5 or facts_done == facts_total:
                last[0] = moment
                report_progress(
                    self.engine,
                    self.job_id,
                    self.worker,
                    relation=relation,
                    relations_done=done,
                    facts_done=facts_done,
                    facts_total=facts_total,
                )

        return update

    def relation_done(self, relation: str, done: int) -> None:
        """Record that `done` relations are finished, with what has been stored so far."""
        from atlas.db.jobs import report_progress

        report_progress(
            self.engine,
            self.job_id,
            self.worker,
            relation=relation,
            relations_done=done,
            circuit_ids=self.circuit_ids,
            edit_ids=self.edit_ids,
            analysis_ids=self.analysis_ids,
        )
