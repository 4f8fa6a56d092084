"""Jobs per hour with one and two `atlas worker` processes on this machine, and the queue's overhead per job.

    .venv/bin/python benchmarks/bench_workers.py [--model smollm2-135m] [--jobs 6] [--rounds 3]
        [--workers 1,2] [--max-facts 32] [--method eap-ig] [--corpus ../shared/lre]

For each worker count: a throw-away PostgreSQL database and Redis database, N worker processes (torch threads
split between them), one warm-up job per worker (loads the model once per process, as in production), then
`--rounds` rounds of `--jobs` discovery jobs (one relation each, sized by faithfulness, no curve) submitted at
once, each round after the last has finished. Every job is a distinct run (relations cycle, the seed changes
per round), so none is found in the catalogue.

Reported, as median and range (min-max): jobs per hour (one sample per round: its jobs over its wall time);
the job function's seconds (one sample per job); the overhead per job: the enqueue-to-start latency of the
jobs that found a worker idle (the first N of each round) and the task's time minus the job function's own
time (both from the worker's log); and the overhead as a share of the job function's median time. The
1-minute load average at the start and end of each worker count is printed with them.
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
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from services import WorkerProcess, pg_database, require_redis, wait_for  # noqa: E402

from atlas.db.engine import make_engine, upgrade  # noqa: E402
from atlas.db.jobs import get_job  # noqa: E402
from atlas.db.store import import_relations  # noqa: E402
from atlas.spec.corpus import load_corpus  # noqa: E402
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


def ended(engine: Any, jobs: list[int]) -> bool:
    return all(get_job(engine, j)["status"] in ("done", "failed") for j in jobs)


def run(args: argparse.Namespace, n_workers: int, user: str) -> dict[str, Any]:
    import workers.app
    from atlas.spec.config import get_settings
    from workers.enqueue import submit_and_send

    load_start = os.getloadavg()[0]
    broker = require_redis(13)
    with pg_database(user) as url, tempfile.TemporaryDirectory() as logs:
        upgrade(url)
        engine = make_engine(url)
        corpus = load_corpus(args.corpus)
        names = [n for n in RELATIONS if n in corpus][: args.jobs + n_workers]
        if len(names) < args.jobs + n_workers:
            raise SystemExit(
                f"--jobs {args.jobs} with {n_workers} workers needs {args.jobs + n_workers} relations"
            )
        import_relations(engine, [corpus[n] for n in names])
        env = {
            "ATLAS_DATABASE_URL": url,
            "ATLAS_BROKER_URL": broker,
            # torch's intra-op threads, split between the worker processes. (ATLAS_THREADS is a setting
            # that nothing reads yet; OMP_NUM_THREADS is what torch takes at start-up.)
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n_workers)),
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
            assert None not in warm, "a distinct run always makes a job"
            wait_for(
                lambda: all(get_job(engine, j)["status"] == "done" for j in warm if j is not None),
                900,
                "warm-up",
                logs_text,
            )
            rounds: list[tuple[list[int], float]] = []  # (job ids, wall seconds)
            for round_no in range(args.rounds):
                started = time.time()
                jobs: list[int] = []
                for name in names[n_workers : n_workers + args.jobs]:
                    request = DiscoveryRequest(args.model, (name,), replace(params, seed=round_no))
                    job_id = submit_and_send(engine, request, "cpu").job_id
                    assert job_id is not None, "a distinct run always makes a job"
                    jobs.append(job_id)
                wait_for(
                    partial(ended, engine, jobs),
                    7200,
                    f"round {round_no + 1}",
                    logs_text,
                )
                rounds.append((jobs, time.time() - started))
        finally:
            for p in procs:
                p.stop()
        views = [get_job(engine, j) for jobs, _ in rounds for j in jobs]
        failed = [v for v in views if v["status"] != "done"]
        if failed:
            raise SystemExit(f"jobs failed: {[(v['id'], v['error']) for v in failed]}")
        timings = {int(m[1]): (float(m[3]), float(m[4])) for m in TASK_LINE.finditer(logs_text())}
        engine.dispose()
    idle = []  # the jobs of each round that found a worker idle
    for jobs, _ in rounds:
        in_round = [v for v in views if v["id"] in jobs]
        idle += sorted(in_round, key=lambda v: _when(v["started_at"]))[:n_workers]
    latency = [_when(v["started_at"]) - _when(v["created_at"]) for v in idle]
    task_minus_work = [timings[v["id"]][0] - timings[v["id"]][1] for v in views]
    work = [float(v["work_seconds"]) for v in views]
    per_hour = [len(jobs) / wall * 3600 for jobs, wall in rounds]
    overhead = statistics.median(latency) + statistics.median(task_minus_work)
    return {
        "workers": n_workers,
        "jobs": len(views),
        "rounds": len(rounds),
        "jobs_per_hour": per_hour,
        "job_s": work,
        "latency_s": latency,
        "task_minus_job_s": task_minus_work,
        "overhead_pct": 100 * overhead / statistics.median(work),
        "load": (load_start, os.getloadavg()[0]),
    }


def spread(values: list[float], digits: int = 1) -> str:
    """Median and range: "12.3 (11.0-14.1)"."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per round, submitted at once")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of --jobs jobs (jobs/hour: one per round)"
    )
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--max-facts", type=int, default=32)
    parser.add_argument("--method", default="eap-ig")
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "lre"))
    parser.add_argument("--keep-unknown", action="store_true", help="For random models, which know no facts.")
    args = parser.parse_args()
    from services import require_pg

    user = require_pg()
    rows = [run(args, int(n), user) for n in args.workers.split(",")]
    print(
        f"\n{args.model}, {args.method}, {args.max_facts} facts per job, {os.cpu_count()} CPU cores; "
        "median (min-max): jobs/h over rounds, the rest over jobs\n"
    )
    print(
        "| worker processes | jobs (rounds) | jobs / hour | job function s | enqueue -> start s "
        "| task - job function s | queue overhead | load start -> end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['workers']} | {r['jobs']} ({r['rounds']}) | {spread(r['jobs_per_hour'])} | "
            f"{spread(r['job_s'])} | {spread(r['latency_s'], 3)} | {spread(r['task_minus_job_s'], 3)} | "
            f"{r['overhead_pct']:.2f}% | {r['load'][0]:.1f} -> {r['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
