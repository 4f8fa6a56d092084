"""Property-based fuzzing of every endpoint from the OpenAPI document (schemathesis): whatever the
parameters and bodies, no answer is a server error (and every schemathesis check holds: status codes,
content types, headers and bodies as documented), and every error is a JSON body with a message. Runs on
PostgreSQL (stricter than SQLite about what it stores) with the synthetic catalogue; writes carry the token
so that bodies are checked past the authentication."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_helpers import RecordingSender, auth, make_client, pg_database, populate
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import ALL_CHECKS, not_a_server_error

from atlas.db.engine import make_engine, upgrade

schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI writes OpenAPI 3.1
EXAMPLES = 25  # per operation (17 operations): about 20 s


@pytest.fixture(scope="module")
def fuzzed_app(pg_admin: str) -> Iterator[FastAPI]:
    for url in pg_database(pg_admin):
        upgrade(url)
        engine = make_engine(url)
        catalogue = populate(engine, url)
        with make_client(catalogue, RecordingSender()) as client:
            yield client.app  # type: ignore[misc]
        engine.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call_and_validate(headers=auth(), checks=(not_a_server_error, *ALL_CHECKS))
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("message"), str) and body["message"], body
