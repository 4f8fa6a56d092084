"""Request bodies are bounded and never read before the token is checked: a write without the server's token
is refused (401, or 403 on a server without one) before its body is read, and a body over
ATLAS_MAX_BODY_BYTES (default 1 MiB) is a 413 without being read whole, whether it declares its length or
comes chunked. Measured on a real `atlas serve`: its peak memory under 50 MB bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import TOKEN, Catalogue, RecordingSender, auth, make_client
from fastapi.testclient import TestClient
from processes import ServerProcess, post_body

from atlas.spec.config import Settings

MB = 1_000_000
JOB = {"model": "toy-a", "relations": ["country_capital_city"], "method": "eap"}


def _padded(size: int) -> bytes:
    """A valid job request padded with whitespace to `size` bytes."""
    text = json.dumps(JOB).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


def test_the_default_limit_is_one_mebibyte() -> None:
    assert Settings().max_body_bytes == 1 << 20


def test_a_body_over_the_limit_is_413_and_one_under_it_is_read(
    client: TestClient, sender: RecordingSender
) -> None:
    over = client.post(
        "/jobs", content=_padded((1 << 20) + 1), headers={**auth(), "content-type": "application/json"}
    )
    assert over.status_code == 413, over.text
    assert "1048576" in over.json()["message"] and "ATLAS_MAX_BODY_BYTES" in over.json()["message"]
    under = client.post(
        "/jobs", content=_padded(1 << 20), headers={**auth(), "content-type": "application/json"}
    )
    assert under.status_code in (200, 201), under.text  # read and parsed: a job (or the stored circuits)


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = client.post("/jobs", content=chunks(), headers={**auth(), "content-type": "application/json"})
    assert response.status_code == 413, response.text


def test_the_token_is_checked_before_the_body(client: TestClient) -> None:
    """Without the token a write is 401 whatever its body: too large, malformed, or not JSON at all."""
    for content in (_padded(5 * MB), b"{not json", b"\xff" * 10):
        response = client.post("/jobs", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 401, response.text
        response = client.post("/edits", content=content, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401, response.text
    response = client.post("/jobs/1/cancel", content=_padded(5 * MB), headers={"Authorization": "Basic abc"})
    assert response.status_code == 401


def test_a_server_without_a_token_refuses_writes_before_the_body(
    catalogue: Catalogue, sender: RecordingSender
) -> None:
    with make_client(catalogue, sender, token="") as client:
        assert client.post("/jobs", content=_padded(5 * MB), headers=auth(TOKEN)).status_code == 403


# ------------------------------------------------------------------------------------- a real server


@pytest.mark.integration
def test_a_real_server_stays_small_under_50_mb_bodies(tmp_path: Path) -> None:
    env = {"ATLAS_DATABASE_URL": f"sqlite:///{tmp_path / 'atlas.db'}", "ATLAS_API_TOKEN": TOKEN}
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        before = server.memory_kib("VmHWM")
        results = {
            "no token": post_body(server.port, {}, 50 * MB, chunked=False),
            "token, declared": post_body(server.port, auth(), 50 * MB, chunked=False),
            "token, chunked": post_body(server.port, auth(), 50 * MB, chunked=True),
        }
        peak = server.memory_kib("VmHWM")
        alive = server.memory_kib("VmRSS")
    finally:
        server.stop()
    grew_mb = (peak - before) / 1024
    print(
        f"\nserver peak RSS {before / 1024:.0f} -> {peak / 1024:.0f} MiB; now {alive / 1024:.0f}; {results}"
    )
    assert [status for status, _ in results.values()] == [401, 413, 413], results
    assert all(sent < 50 * MB for _, sent in results.values()), results  # the server stopped listening first
    assert grew_mb < 10, f"the server's peak RSS grew by {grew_mb:.0f} MiB"
