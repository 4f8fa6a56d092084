"""Queueing work from a route (POST /jobs, /edits and /analyses): a job request of any kind is submitted and
its id sent by workers.enqueue.submit_and_send, the one place a broker that cannot be reached fails the job
just recorded. Here its errors become answers: a bad value 422 naming the body's field, a broker that cannot
be reached 503."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from api.errors import ApiError, status_of
from api.schemas import ErrorBody
from atlas.spec.errors import AtlasError, Invalid
from workers.enqueue import QueueUnavailable

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token, or not the server's."},
    403: {"model": ErrorBody, "description": "The server has no ATLAS_API_TOKEN: it accepts no writes."},
}
QUEUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    503: {"model": ErrorBody, "description": "The job queue (broker) is unreachable; nothing queued."},
}


@contextmanager
def submission_errors() -> Iterator[None]:
    """Typed errors that name a field answered 422 on `body.<field>`; QueueUnavailable answered 503; other
    typed errors (an unknown relation: 404) as the app's handler answers them."""
    try:
        yield
    except QueueUnavailable as error:
        raise ApiError(503, str(error)) from None
    except AtlasError as error:
        field = getattr(error, "field", None)
        if field and status_of(error) == 422:
            raise Invalid(f"invalid parameters: body.{field}: {error}", field=f"body.{field}") from None
        raise
