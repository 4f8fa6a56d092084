"""Real processes and the faults put to them, for tests and benchmarks/faults.py: `atlas serve` on a free
port (its own process group, waited for until /health answers, its memory read from /proc, stopped with
SIGTERM, SIGKILL after 20 s); a request body sent over a raw socket that stops as soon as the server
answers; a PostgreSQL database renamed away and back (an outage as its clients see it); identical posts
released at once. Importable from any test (tests/ is on sys.path) and from benchmarks/ (which add
tests/)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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


def post_body(port: int, headers: dict[str, str], size: int, chunked: bool) -> tuple[int, int]:
    """POST /jobs with a `size`-byte body sent in 64 KiB pieces over a raw socket, stopping as soon as the
    server answers (or closes); the status and the bytes sent."""
    head = ["POST /jobs HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent, piece = 0, b" " * 65536
    answer = b""
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        while sent < size:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            data = piece[: size - sent]
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                sock.sendall(frame)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
        if chunked and sent >= size and not answer:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"0\r\n\r\n")
        sock.setblocking(True)
        deadline = time.monotonic() + 60
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            answer += more
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def rename_database(user: str, old: str, new: str, timeout: float = 30) -> None:
    """Rename a PostgreSQL database, closing its connections first (clients reconnect, so until it takes).
    While it is renamed away, its clients' connections fail as in an outage."""
    import psycopg
    from services import pg_execute

    deadline = time.monotonic() + timeout
    while True:
        pg_execute(
            user,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{old}' "
            "AND pid <> pg_backend_pid()",
        )
        try:
            pg_execute(user, f'ALTER DATABASE "{old}" RENAME TO "{new}"')
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def race_posts(
    base: str, path: str, body: dict[str, Any], headers: dict[str, str], n: int
) -> list[httpx.Response]:
    """`n` identical POSTs released at once (a barrier), each on its own connection; their answers."""
    start = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            start.wait()
            answers.append(client.post(path, json=body, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def use_broker(url: str) -> None:
    """Send this process's jobs (workers.enqueue.send_job) to the broker at `url`. Celery caches its
    connection and producer pools on first use, so setting the URL alone would keep sending to the broker a
    previous test used: drop them as Celery does after a fork."""
    import workers.app

    workers.app.app.conf.broker_url = url
    workers.app.app._after_fork()
