"""A token sent in the query string never reaches the access log: `token`, `access_token`, `api_token` and
`authorization` values are redacted from the URLs a real `atlas serve` logs (whatever the key's case or
percent-encoding), and other parameters are logged as sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from processes import ServerProcess

from api.access_log import redact

SECRET = "s3cr3t-0f-the-server"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/circuits?token=abc&model=x", "/circuits?token=[redacted]&model=x"),
        ("/jobs?ACCESS_TOKEN=abc", "/jobs?ACCESS_TOKEN=[redacted]"),
        ("/jobs?%74oken=abc&limit=5", "/jobs?%74oken=[redacted]&limit=5"),
        (
            "/x?authorization=Bearer%20abc&token=&api_token=q",
            "/x?authorization=[redacted]&token=[redacted]&api_token=[redacted]",
        ),
        ("/x?token", "/x?token"),
        ("/x?a=1&token=abc&token=def", "/x?a=1&token=[redacted]&token=[redacted]"),
        ("/x?tokens=abc&model_token=1", "/x?tokens=abc&model_token=1"),
        ("/x;token=abc", "/x;token=abc"),
        ("/circuits", "/circuits"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_a_real_server_logs_no_token_from_a_query_string(tmp_path: Path) -> None:
    env = {"ATLAS_DATABASE_URL": f"sqlite:///{tmp_path / 'atlas.db'}", "ATLAS_API_TOKEN": SECRET}
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            asked = [
                f"/circuits?token={SECRET}&limit=7",
                f"/jobs?access_token={SECRET}",
                f"/models?Authorization=Bearer%20{SECRET}",
                f"/nope?%74oken={SECRET}",
                f"/jobs?api_token={SECRET}&status=queued",
            ]
            statuses = [client.get(path).status_code for path in asked]
            statuses.append(client.post(f"/jobs?token={SECRET}", json={}).status_code)
    finally:
        server.stop()
    assert statuses == [200, 200, 200, 404, 200, 401]
    log = server.output()
    assert SECRET not in log
    assert "GET /circuits?token=[redacted]&limit=7" in log
    assert "GET /jobs?api_token=[redacted]&status=queued" in log
    assert log.count("[redacted]") == len(statuses)
