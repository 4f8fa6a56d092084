"""The CI switch (tests/services.py): with CI=true, ATLAS_REQUIRE_SERVICES=1 or the older
ATLAS_REQUIRE_POSTGRES=1, a test that needs PostgreSQL, Redis, the browser or ../shared/lre fails when it is
missing; otherwise it is skipped with the reason. Each case runs pytest in a subprocess on a small test file,
with every requirement pointed where nothing is, and reads the outcomes from its JUnit report."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from services import SWITCHES

TESTS = Path(__file__).resolve().parents[1]

PROBE = """
from services import require_browser, require_lre, require_pg, require_redis


def test_postgres():
    require_pg()


def test_redis():
    require_redis(0)


def test_browser():
    require_browser()


def test_lre():
    require_lre()
"""


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outcomes(tmp_path: Path, switch: dict[str, str]) -> dict[str, str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", *SWITCHES)}
    env |= {
        "PYTHONPATH": str(TESTS),
        "ATLAS_TEST_PG_PORT": str(closed_port()),
        "ATLAS_TEST_REDIS_URL": f"redis://127.0.0.1:{closed_port()}",
        "ATLAS_CHROMIUM": str(tmp_path / "no-chromium"),
        "ATLAS_LRE_DIR": str(tmp_path / "no-lre"),
        **switch,
    }
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "test_probe.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.exists(), run.stdout + run.stderr
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[case.attrib["name"]] = kinds[0] if kinds else "passed"
    assert (run.returncode != 0) == ("failure" in result.values()), run.stdout
    return result


ALL = ("test_postgres", "test_redis", "test_browser", "test_lre")


@pytest.mark.parametrize(
    ("switch", "expected"),
    [
        ({}, "skipped"),
        ({"CI": "false"}, "skipped"),
        ({"ATLAS_REQUIRE_SERVICES": "0"}, "skipped"),
        ({"CI": "true"}, "failure"),
        ({"ATLAS_REQUIRE_SERVICES": "1"}, "failure"),
        ({"ATLAS_REQUIRE_POSTGRES": "1"}, "failure"),  # the older name
    ],
)
def test_missing_requirements_fail_in_ci_and_skip_elsewhere(
    tmp_path: Path, switch: dict[str, str], expected: str
) -> None:
    assert outcomes(tmp_path, switch) == dict.fromkeys(ALL, expected)


def test_no_test_skips_on_its_own() -> None:
    """Every skip goes through services.require, so that CI turns it into a failure."""
    pattern = re.compile(r"pytest\.skip\(|\.skipif\(|importorskip\(|pytest\.mark\.skip\b|unittest\.skip")
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("services.py", Path(__file__).name)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
