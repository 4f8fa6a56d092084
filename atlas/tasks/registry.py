"""The job kinds, by name: the one list submission, dispatch and the docs derive from. A job whose kind is
not here is refused at submission and failed with its message if a worker finds one in the jobs table."""

from __future__ import annotations

from typing import Any

from atlas.db.jobs import InvalidJob
from atlas.tasks.analysis import AnalysisRequest
from atlas.tasks.base import JobRequest
from atlas.tasks.discover import DiscoveryRequest
from atlas.tasks.edit import EditJobRequest

REQUESTS: dict[str, type[JobRequest]] = {
    request.kind: request for request in (DiscoveryRequest, EditJobRequest, AnalysisRequest)
}
JOB_KINDS: tuple[str, ...] = tuple(REQUESTS)


class UnknownJobKind(InvalidJob):
    """A job kind that is not registered."""


def request_class(kind: str) -> type[JobRequest]:
    if kind not in REQUESTS:
        raise UnknownJobKind(f"unknown job kind {kind!r}: one of {', '.join(JOB_KINDS)}", field="kind")
    return REQUESTS[kind]


def request_of(kind: str, data: dict[str, Any]) -> JobRequest:
    """A stored job's request, as its kind's class. A malformed one raises InvalidJob saying so."""
    cls = request_class(kind)
    try:
        return cls.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        message = f"malformed {kind} job request: {type(error).__name__}: {error}"
        raise InvalidJob(message, field="request") from None
