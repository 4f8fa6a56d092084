"""Celery workers for the atlas: the app (`workers.app`), the tasks (`workers.tasks`) and how a job's id
is sent to them (`workers.enqueue`). Job state lives in the catalogue's `jobs` table, not in Celery."""
