"""Fixtures of the browser tests: a catalogue of synthetic circuits (tests/api/api_helpers.py) in a SQLite
file, with a knowledge edit, a faithfulness curve and a queued job added; `atlas serve` on it as a real
uvicorn process on a free port; and Debian's chromium driven by playwright (never a browser playwright
downloads). Without chromium or playwright the tests are skipped with the reason, or fail in CI
(services.require). Screenshots go to test-output/screenshots/. Helpers are in web_helpers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import require_browser
from web_helpers import (
    CHROMIUM,
    REPO,
    SCREENSHOTS,
    TOKEN,
    Console,
    Site,
    add_extras,
    add_planted,
    free_port,
)

from atlas.db.engine import make_engine, upgrade


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{folder / 'atlas.db'}"
    upgrade(url)
    engine = make_engine(url)
    from api_helpers import populate

    catalogue = populate(engine, url)
    edit_id, curve_circuit, job_id = add_extras(catalogue)
    add_planted(catalogue)
    port = free_port()
    log = folder / "server.log"
    env = {**os.environ, "ATLAS_DATABASE_URL": url, "ATLAS_API_TOKEN": TOKEN, "ATLAS_BROKER_URL": ""}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atlas",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield Site(base, catalogue, edit_id, curve_circuit, job_id, log, client)
    finally:
        client.close()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_browser()  # skipped without chromium or playwright; failed in CI
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SCREENSHOTS}")
    return SCREENSHOTS


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.on(
        "console",
        lambda m: console.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    tab.on("pageerror", lambda e: console.errors.append(f"page error: {e}"))
    try:
        yield tab
        assert console.unexpected() == [], console.unexpected()
    finally:
        context.close()
