"""Fault injection against real processes: the three failures of the hardening issue, rerun and tabulated.

    .venv/bin/python benchmarks/faults.py [--outage 20] [--posts 16] [--body-mb 50] [--only 1,2,3]

1. Database outage longer than the retry budget. A throw-away PostgreSQL catalogue, Redis database 8, one
   `atlas worker` with a budget cut to seconds (2 retries, 0.5 s then 1 s; stale after 3 s; reaper every
   second). A 3-relation EAP-IG job on the tiny Llama starts; the database is renamed away (its connections
   closed) until the worker has given up and then `--outage` seconds more, then renamed back. Reported: the
   job's end state, attempts, re-queues, seconds from the database's return to the job's end, circuits per
   run, and messages left in Redis.
2. Concurrent identical submissions. `atlas serve` on SQLite and on PostgreSQL; `--posts` identical
   `POST /jobs` released at once. Reported: 201s, 200s, other answers, and job rows created.
3. Request bodies. `atlas serve` on SQLite; a `--body-mb` MB `POST /jobs` without a token, with the token
   and a declared length, and with the token chunked, each over a raw socket that stops sending when the
   server answers. Reported: status, MB sent before the answer, and the server's peak RSS before and after.

Prints one table row per check (expected, observed, ok); exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from processes import ServerProcess, post_body, race_posts, rename_database, use_broker  # noqa: E402
from services import WorkerProcess, pg_admin_user, pg_database, require_redis, wait_for  # noqa: E402

from atlas.db.engine import make_engine, upgrade  # noqa: E402
from atlas.db.jobs import get_job  # noqa: E402
from atlas.db.store import import_relations  # noqa: E402
from atlas.spec.corpus import bundled_corpus_path, load_corpus  # noqa: E402
from atlas.spec.params import DiscoveryParams  # noqa: E402
from atlas.tasks.discover import DiscoveryRequest  # noqa: E402

TOKEN = "faults-token-5a1f"
REDIS_DB = 8
FAST_RECOVERY = {
    "ATLAS_JOB_RETRIES": "2",
    "ATLAS_JOB_RETRY_DELAY": "0.5",
    "ATLAS_JOB_RETRY_DELAY_MAX": "1",
    "ATLAS_JOB_STALE_SECONDS": "3",
    "ATLAS_REAPER_SECONDS": "1",
}
Row = tuple[str, str, str, str, bool]


def _catalogue(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    import_relations(engine, load_corpus(bundled_corpus_path()).values())
    engine.dispose()


def _use_broker(broker: str, env: dict[str, str]) -> None:
    """Point this process's settings and Celery app at the run's broker (as `atlas discover --enqueue`)."""
    os.environ.update(env)
    from atlas.spec.config import get_settings

    get_settings.cache_clear()
    use_broker(broker)


def outage(user: str, seconds: float, folder: Path) -> list[Row]:
    import redis
    from sqlalchemy.engine import make_url

    from workers.enqueue import submit_and_send

    broker = require_redis(REDIS_DB)
    with pg_database(user) as url:
        _catalogue(url)
        env = {
            "ATLAS_DATABASE_URL": url,
            "ATLAS_BROKER_URL": broker,
            "ATLAS_DEVICE": "cpu",
            "ATLAS_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            **FAST_RECOVERY,
        }
        _use_broker(broker, env)
        engine = make_engine(url)
        params = DiscoveryParams(method="eap-ig", ig_steps=8, max_facts=16, known_only=False)
        request = DiscoveryRequest(
            "tiny-llama", ("country_capital_city", "country_language", "city_in_country"), params
        )
        job_id = submit_and_send(engine, request, "cpu").job_id
        assert job_id is not None
        worker = WorkerProcess(env, folder / "worker.log")
        name = str(make_url(url).database)
        try:
            wait_for(
                lambda: get_job(engine, job_id)["progress"]["facts_done"] > 0, 300, "the job", worker.output
            )
            engine.dispose()
            went = time.monotonic()
            rename_database(user, name, f"{name}_away")
            try:
                wait_for(lambda: "giving up" in worker.output(), 180, "the worker to give up", worker.output)
                time.sleep(seconds)
            finally:
                rename_database(user, f"{name}_away", name)
            back = time.monotonic()
            wait_for(
                lambda: get_job(engine, job_id)["status"] in ("done", "failed", "cancelled"),
                600,
                "the job's end",
                worker.output,
            )
            ended = time.monotonic()
        finally:
            worker.stop()
        job = get_job(engine, job_id)
        from sqlalchemy import func, select

        from atlas.db.models import Circuit, Run

        with engine.connect() as connection:
            per_run = sorted(
                connection.execute(select(func.count(Circuit.id)).join(Run).group_by(Run.id)).scalars()
            )
        engine.dispose()
    client = redis.Redis.from_url(broker)
    left = (int(client.llen("cpu")), int(client.hlen("unacked")))
    client.flushdb()
    observed = (
        f"{job['status']} after {ended - back:.1f} s back (outage {back - went:.1f} s); attempts "
        f"{job['attempts']}, re-queued {job['requeues']}; circuits per run {per_run}; messages left {left}"
    )
    ok = job["status"] == "done" and per_run == [1, 1, 1] and left == (0, 0) and job["requeues"] >= 1
    return [("1 outage > retry budget", "postgresql", "job re-queued, done once", observed, ok)]


def concurrent(
    backends: list[tuple[str, Callable[[], AbstractContextManager[str]]]], posts: int, folder: Path
) -> list[Row]:
    rows: list[Row] = []
    broker = require_redis(REDIS_DB)
    body = {"model": "tiny-llama", "relations": ["country_language"], "method": "eap", "max_facts": 4}
    for backend, database in backends:
        with database() as url:
            _catalogue(url)
            env = {"ATLAS_DATABASE_URL": url, "ATLAS_BROKER_URL": broker, "ATLAS_API_TOKEN": TOKEN}
            server = ServerProcess(env, folder / f"server-{backend}.log")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            try:
                statuses = [a.status_code for a in race_posts(server.base, "/jobs", body, headers, posts)]
                jobs = len(httpx.get(f"{server.base}/jobs", timeout=30).json()["items"])
            finally:
                server.stop()
        created, found = statuses.count(201), statuses.count(200)
        observed = f"{created} x 201, {found} x 200, {posts - created - found} other; {jobs} job rows"
        ok = (created, found, jobs) == (1, posts - 1, 1)
        rows.append((f"2 {posts} identical POST /jobs at once", backend, "1 job, 1 x 201", observed, ok))
    import redis

    redis.Redis.from_url(broker).flushdb()
    return rows


def bodies(megabytes: int, folder: Path) -> list[Row]:
    size = megabytes * 1_000_000
    env = {"ATLAS_DATABASE_URL": f"sqlite:///{folder / 'bodies.db'}", "ATLAS_API_TOKEN": TOKEN}
    server = ServerProcess(env, folder / "server-bodies.log")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("no token", {}, False, 401),
        ("token, declared length", auth, False, 413),
        ("token, chunked", auth, True, 413),
    ]
    rows: list[Row] = []
    try:
        for name, headers, chunked, expected in cases:
            before = server.memory_kib("VmHWM")
            status, sent = post_body(server.port, headers, size, chunked)
            peak = server.memory_kib("VmHWM")
            observed = (
                f"{status}; {sent / 1e6:.1f} of {megabytes} MB sent; peak RSS {before / 1024:.0f} -> "
                f"{peak / 1024:.0f} MiB"
            )
            ok = status == expected and sent < size and (peak - before) / 1024 < 10
            rows.append(
                (
                    f"3 {megabytes} MB POST /jobs, {name}",
                    "sqlite",
                    f"{expected}, peak RSS +<10 MiB",
                    observed,
                    ok,
                )
            )
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage", type=float, default=20, help="Seconds the outage lasts past the give-up.")
    parser.add_argument("--posts", type=int, default=16)
    parser.add_argument("--body-mb", type=int, default=50)
    parser.add_argument("--only", default="1,2,3", help="Which checks: 1 outage, 2 concurrency, 3 bodies.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    user, reason = pg_admin_user()
    if user is None:
        print(f"PostgreSQL is needed: {reason}", file=sys.stderr)
        return 2
    chosen = set(args.only.split(","))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="atlas-faults-") as tmp:
        folder = Path(tmp)
        if "1" in chosen:
            rows += outage(user, args.outage, folder)
        if "2" in chosen:
            sqlite = f"sqlite:///{folder / 'concurrent.db'}"
            databases = [("sqlite", lambda: nullcontext(sqlite)), ("postgresql", lambda: pg_database(user))]
            rows += concurrent(databases, args.posts, folder)
        if "3" in chosen:
            rows += bodies(args.body_mb, folder)
    header = ("fault", "backend", "expected", "observed", "ok")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    print(" | ".join(h.ljust(w) for h, w in zip(header[:4], widths, strict=True)) + " | ok")
    print("-|-".join("-" * w for w in widths) + "-|---")
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        print(" | ".join(cells) + f" | {'yes' if row[4] else 'NO'}")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
