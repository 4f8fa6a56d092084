"""The reaper: no job is left without an owner. Every worker process and every API process runs one, every
ATLAS_REAPER_SECONDS. A job is an orphan when it is running with a heartbeat older than
ATLAS_JOB_STALE_SECONDS (its worker died, or gave up retrying while the database was away), or queued and
untouched for as long, and the broker holds no message for it (none waiting in a queue, none taken by a
worker and unacknowledged: a running task, or a retry held for its countdown). An orphan is re-queued and
its id sent again, or failed with a note once it has been re-queued ATLAS_JOB_MAX_REQUEUES times. Many
reapers may run at once: each change is a conditional UPDATE, so one wins and only the winner sends.

Imports neither torch nor the task code (the API runs it)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from atlas.db.jobs import QUEUES, Orphan, orphan_candidates, requeue_orphan
from atlas.spec.config import Settings
from workers.app import TASK_RUN_JOB

log = logging.getLogger(__name__)
Send = Callable[[int, str], object]


def _job_id(raw: bytes | str) -> int | None:
    """The job id a kombu Redis message for the run_job task carries, or None."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacknowledged entry: [message, exchange, routing key]
            message = message[0]
        if message.get("headers", {}).get("task") != TASK_RUN_JOB:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def jobs_with_messages(broker_url: str, queues: Iterable[str] = QUEUES) -> set[int] | None:
    """Ids of the jobs the Redis broker holds a message for (waiting in a queue, or delivered and not yet
    acknowledged); None when it cannot be read (not Redis, or unreachable)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    found: set[int] = set()
    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=10)
        for queue in queues:
            for key in client.scan_iter(match=f"{queue}*"):  # priority levels are keys "cpu\x06\x163"...
                if client.type(key) == b"list":
                    found.update(j for j in map(_job_id, client.lrange(key, 0, -1)) if j is not None)
        found.update(j for j in map(_job_id, client.hvals("unacked")) if j is not None)
    except redis.RedisError as error:
        log.warning("reaper: the broker cannot be read (%s): nothing re-queued this time", error)
        return None
    return found


def _requeue(engine: Engine, orphan: Orphan, send: Send, settings: Settings) -> str:
    outcome = requeue_orphan(engine, orphan, settings.job_stale_seconds, settings.job_max_requeues)
    if outcome == "requeued":
        try:
            send(orphan.id, orphan.queue)
        except Exception as error:  # the broker refused: it stays queued, and the next pass sends it again
            log.error("reaper: job %s re-queued but not sent: %s: %s", orphan.id, type(error).__name__, error)
            return "unsent"
        log.warning(
            "reaper: job %s re-queued (was %s, worker %s; no heartbeat or message for %g s)",
            orphan.id,
            orphan.status,
            orphan.worker or "none",
            settings.job_stale_seconds,
        )
    elif outcome == "failed":
        log.error("reaper: job %s failed: re-queued %d times already", orphan.id, orphan.requeues)
    return outcome


def reap(engine: Engine, send: Send, settings: Settings, only: int | None = None) -> dict[int, str]:
    """One pass (or, with `only`, one job): what happened to each orphan found ("requeued", "failed",
    "unsent", "changed")."""
    orphans = [o for o in orphan_candidates(engine, settings.job_stale_seconds) if only in (None, o.id)]
    if not orphans:
        return {}
    pending = jobs_with_messages(settings.broker_url)
    if pending is None and only is None:
        return {}  # a pass that cannot see the broker re-queues nothing (a resubmission still revives)
    return {o.id: _requeue(engine, o, send, settings) for o in orphans if o.id not in (pending or set())}


class Reaper:
    """`reap` every `interval` seconds in a daemon thread until stopped; a failed pass is logged, and the
    next one tries again."""

    def __init__(self, engine: Callable[[], Engine], send: Send, settings: Settings) -> None:
        self.engine, self.send, self.settings = engine, send, settings
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="atlas-reaper", daemon=True)

    def start(self) -> Reaper:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.wait(self.settings.reaper_seconds):
            try:
                reap(self.engine(), self.send, self.settings)
            except Exception as error:
                log.warning("reaper: pass failed (%s: %s); trying again later", type(error).__name__, error)


def start_reaper(engine: Callable[[], Engine], send: Send, settings: Settings) -> Reaper | None:
    """A running reaper, or None when it is turned off (ATLAS_REAPER_SECONDS=0) or there is no broker."""
    if settings.reaper_seconds <= 0 or not settings.broker_url:
        return None
    return Reaper(engine, send, settings).start()


def revive(engine: Engine, job_id: int, send: Send, settings: Settings) -> bool:
    """Re-queue this one job now if it is an orphan (a submission that found it as the identical active
    job); True when it was re-queued and sent."""
    return reap(engine, send, settings, only=job_id).get(job_id) == "requeued"
