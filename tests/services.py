"""The real services tests talk to: throw-away PostgreSQL databases, a Redis database number, and `atlas
worker` processes. Importable from any test (pytest puts tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_URL = "redis://127.0.0.1:6379"
ATLAS = str(Path(sys.executable).with_name("atlas"))


def pg_admin_user() -> tuple[str | None, str]:
    """A user that can create databases on the local server, or None and why not."""
    import psycopg

    reasons = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3
            ) as connection:
                connection.execute("select 1")
            return user, ""
        except psycopg.Error as error:
            reasons.append(f"{user}: {str(error).strip().splitlines()[0]}")
    return None, f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable ({'; '.join(reasons)})"


def require_pg() -> str:
    user, reason = pg_admin_user()
    if user is None:
        if os.environ.get("ATLAS_REQUIRE_POSTGRES"):  # CI: a missing server is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    return user


def pg_execute(user: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as c:
        c.execute(sql.encode())


@contextmanager
def pg_database(user: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; its URL. Dropped afterwards."""
    name = f"atlas_test_{uuid.uuid4().hex[:12]}"
    pg_execute(user, f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        pg_execute(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def require_redis(db: int) -> str:
    """The URL of a flushed Redis database number; skipped (failed in CI) when no server answers."""
    import redis

    url = f"{REDIS_URL}/{db}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.flushdb()
    except redis.RedisError as error:
        if os.environ.get("ATLAS_REQUIRE_POSTGRES"):
            pytest.fail(f"Redis at {url} unreachable: {error}")
        pytest.skip(f"Redis at {url} unreachable: {error}")
    return url


class WorkerProcess:
    """An `atlas worker` in its own process group (so SIGKILL takes its pool with it)."""

    def __init__(self, env: dict[str, str], log: Path, queues: str = "cpu", concurrency: int = 1) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [ATLAS, "worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env={**os.environ, **env},
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole worker, pool included: no warm shutdown, no message given back."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, log: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    tail = f"\n--- worker log ---\n{log()[-4000:]}" if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
