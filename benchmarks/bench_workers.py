"""Jobs per hour with one and two `atlas worker` processes on this machine, and the queue's overhead per job.

    .venv/bin/python benchmarks/bench_workers.py [--model smollm2-135m] [--jobs 4] [--workers 1,2]
        [--max-facts 32] [--method eap-ig] [--corpus ../shared/lre]

For each worker count: a throw-away PostgreSQL database and Redis database, N worker processes (torch threads
split between them), one warm-up job per worker (loads the model once per process, as in production), then
`--jobs` discovery jobs (one relation each) submitted at once. Reported: wall time and jobs per hour; the
overhead per job: enqueue-to-start latency of the jobs that found a worker idle, and the task's time minus the
job function's own time (both from the worker's log), against the mean job-function time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from services import WorkerProcess, pg_database, require_redis, wait_for  # noqa: E402

from atlas.core.corpus import load_corpus  # noqa: E402
from atlas.db.engine import make_engine, upgrade  # noqa: E402
from atlas.db.jobs import get_job  # noqa: E402
from atlas.db.store import import_relations  # noqa: E402
from atlas.spec.params import DiscoveryParams  # noqa: E402
from atlas.tasks.discover import DiscoveryRequest  # noqa: E402

RELATIONS = (
    "country_capital_city",
    "country_language",
    "country_currency",
    "city_in_country",
    "person_native_language",
    "food_from_country",
    "country_largest_city",
    "landmark_in_country",
)
TASK_LINE = re.compile(r"job (\d+): (\w+) .* task_seconds=([\d.]+) work_seconds=([\d.]+)")


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def run(args: argparse.Namespace, n_workers: int, user: str) -> dict[str, float]:
    import workers.app
    from atlas.config import get_settings
    from workers.enqueue import submit_and_send

    broker = require_redis(13)
    with pg_database(user) as url, tempfile.TemporaryDirectory() as logs:
        upgrade(url)
        engine = make_engine(url)
        corpus = load_corpus(args.corpus)
        names = [n for n in RELATIONS if n in corpus][: args.jobs + n_workers]
        import_relations(engine, [corpus[n] for n in names])
        env = {
            "ATLAS_DATABASE_URL": url,
            "ATLAS_BROKER_URL": broker,
            "ATLAS_THREADS": str(max(1, (os.cpu_count() or 2) // n_workers)),
        }
        os.environ.update(env)
        get_settings.cache_clear()
        workers.app.app.conf.broker_url = broker
        params = DiscoveryParams(
            method=args.method, max_facts=args.max_facts, curve=False, known_only=not args.keep_unknown
        )
        procs = [WorkerProcess(env, Path(logs) / f"w{i}.log") for i in range(n_workers)]
        logs_text = lambda: "\n".join(p.output() for p in procs)  # noqa: E731
        try:
            # Warm-up: one small job per worker, so each process has loaded the model.
            warm = [
                submit_and_send(
                    engine,
                    DiscoveryRequest(args.model, (names[i],), replace(params, max_facts=2, seed=99)),
                    "cpu",
                ).job_id
                for i in range(n_workers)
            ]
            wait_for(
                lambda: all(get_job(engine, j)["status"] == "done" for j in warm), 900, "warm-up", logs_text
            )
            started = time.time()
            jobs = [
                submit_and_send(engine, DiscoveryRequest(args.model, (name,), params), "cpu").job_id
                for name in names[n_workers : n_workers + args.jobs]
            ]
            wait_for(
                lambda: all(get_job(engine, j)["status"] in ("done", "failed") for j in jobs),
                7200,
                "the jobs",
                logs_text,
            )
            wall = time.time() - started
        finally:
            for p in procs:
                p.stop()
        views = [get_job(engine, j) for j in jobs]
        failed = [v for v in views if v["status"] != "done"]
        if failed:
            raise SystemExit(f"jobs failed: {[(v['id'], v['error']) for v in failed]}")
        timings = {int(m[1]): (float(m[3]), float(m[4])) for m in TASK_LINE.finditer(logs_text())}
        engine.dispose()
    first = sorted(views, key=lambda v: _when(v["started_at"]))[:n_workers]  # these found a worker idle
    latency = statistics.mean(_when(v["started_at"]) - _when(v["created_at"]) for v in first)
    task_minus_work = statistics.mean(timings[v["id"]][0] - timings[v["id"]][1] for v in views)
    work = statistics.mean(v["work_seconds"] for v in views)
    return {
        "workers": n_workers,
        "jobs": len(views),
        "wall_s": wall,
        "jobs_per_hour": len(views) / wall * 3600,
        "job_s": work,
        "latency_s": latency,
        "task_minus_job_s": task_minus_work,
        "overhead_pct": 100 * (latency + task_minus_work) / work,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--max-facts", type=int, default=32)
    parser.add_argument("--method", default="eap-ig")
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "lre"))
    parser.add_argument("--keep-unknown", action="store_true", help="For random models, which know no facts.")
    args = parser.parse_args()
    from services import require_pg

    user = require_pg()
    rows = [run(args, int(n), user) for n in args.workers.split(",")]
    print(f"\n{args.model}, {args.method}, {args.max_facts} facts per job, {os.cpu_count()} CPU cores\n")
    print(
        f"{'workers':>7} {'jobs':>4} {'wall s':>7} {'jobs/h':>7} {'job s':>7} {'enqueue->start s':>17} "
        f"{'task-job s':>10} {'overhead':>9}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7} {r['jobs']:>4} {r['wall_s']:>7.1f} {r['jobs_per_hour']:>7.1f} "
            f"{r['job_s']:>7.1f} {r['latency_s']:>17.3f} {r['task_minus_job_s']:>10.3f} "
            f"{r['overhead_pct']:>8.2f}%"
        )


if __name__ == "__main__":
    main()
