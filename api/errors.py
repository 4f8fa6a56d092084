"""Errors as JSON bodies with an actionable message (api.schemas.ErrorBody): unknown things are 404, bad
parameters 422 naming the field, conflicts 409, an unreachable database or broker 503. Nothing is echoed
from request headers (a bearer token never appears in a body or a log line)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorBody, FieldError
from atlas.spec.errors import AtlasError, Conflict, NotFound

log = logging.getLogger("api")


class ApiError(Exception):
    """Raised by routes: answered with this status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def body(status: int, message: str, errors: list[FieldError] | None = None, **kw: Any) -> JSONResponse:
    return JSONResponse(
        ErrorBody(message=message, errors=errors or []).model_dump(), status_code=status, **kw
    )


def status_of(error: AtlasError) -> int:
    """The status a typed error calls for: unknown things 404, conflicts 409, anything else bad input 422."""
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    return 422


def _field(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def _validation(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = []
    for item in error.errors():
        message = str(item.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        errors.append(FieldError(field=_field(tuple(item.get("loc", ()))), message=message))
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5]) or "invalid request"
    return body(422, f"invalid parameters: {summary}", errors)


def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return body(error.status, error.message, headers=error.headers)


def _http(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    message = str(error.detail)
    if error.status_code == 404 and message == "Not Found":
        message = "no such path: see /docs for the API's paths"
    elif error.status_code == 405:
        message = "method not allowed on this path: see /docs"
    return body(error.status_code, message, headers=getattr(error, "headers", None))


def _typed(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AtlasError)
    field = getattr(error, "field", None)
    errors = (
        [FieldError(field=field if "." in field else f"body.{field}", message=str(error))] if field else []
    )
    return body(status_of(error), str(error), errors)


def _data(_: Request, error: Exception) -> JSONResponse:
    return body(422, "a parameter is out of range or holds characters the database cannot store")


def _unavailable(_: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(error).__name__)
    return body(
        503, "the catalogue database is unreachable or busy; try again shortly", headers={"Retry-After": "5"}
    )


def _schema(_: Request, error: Exception) -> JSONResponse:
    log.error("database schema: %s", error)
    return body(503, "the catalogue database has no (or an old) schema: run `atlas db upgrade` on the server")


def _internal(_: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=error)
    return body(500, f"internal error ({type(error).__name__}); it has been logged on the server")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(AtlasError, _typed)
    app.add_exception_handler(DataError, _data)
    for kind in (OperationalError, InterfaceError, PoolTimeout, ConnectionError):
        app.add_exception_handler(kind, _unavailable)
    app.add_exception_handler(ProgrammingError, _schema)
    app.add_exception_handler(Exception, _internal)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown model, relation, circuit, component or job."},
    422: {"model": ErrorBody, "description": "Bad parameters; `errors` names the fields."},
}
