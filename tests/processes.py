"""`atlas serve` as a real process on a free port, for tests and fault-injection scripts: started in its own
process group, waited for until /health answers, its memory read from /proc, stopped with SIGTERM (SIGKILL
after 20 s). Importable from any test (tests/ is on sys.path) and from benchmarks/ (they add tests/)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`atlas serve --workers 1` (uvicorn in this one process) with `env` added to this environment."""

    def __init__(self, env: dict[str, str], log: Path, timeout: float = 60) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "atlas", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **env},
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"atlas serve did not start:\n{self.output()[-3000:]}")
            time.sleep(0.25)

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A memory figure of the server process from /proc: VmRSS (now) or VmHWM (peak RSS so far)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise KeyError(field)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
