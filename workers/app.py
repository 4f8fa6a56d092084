"""The Celery app. Redis (`ATLAS_BROKER_URL`) is the broker; there is no result backend: a job's state and
progress live in the catalogue. Importing this module loads no model and no torch (the API imports it to send
tasks).

Delivery: tasks are acknowledged after they finish (`acks_late`), and a task whose worker process is lost is
put back (`reject_on_worker_lost`); a message whose worker died with it (SIGKILL of the whole worker) comes
back after `ATLAS_VISIBILITY_TIMEOUT` seconds. Both are safe because a job is claimed in the database before
it runs and every run it stores has a unique key.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from atlas.db.jobs import QUEUES
from atlas.spec.config import get_settings

TASK_RUN_JOB = "atlas.run_job"


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("atlas", broker=settings.broker_url or "redis://127.0.0.1:6379/0")
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,  # a job takes minutes: never hold one back while another runs
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_serializer="json",
        accept_content=["json"],
        include=["workers.tasks"],
    )
    return app


app = make_app()
