"""Settings from ATLAS_* environment variables. Reading them does no work beyond parsing."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".cache" / "circuit-atlas"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATLAS_", extra="ignore")

    # "cpu", "cuda", "cuda:1"; empty means CUDA when present, else CPU.
    device: str = ""
    # Where dequantized offline models and other derived files are cached.
    cache_dir: Path = Field(default_factory=lambda: _default_home() / "models")
    # Unset: an embedded SQLite file under the atlas home.
    database_url: str = ""
    # Unset: jobs run inline, no queue.
    broker_url: str = ""
    api_token: str = ""  # bearer token for the API's write endpoints; unset: the API accepts no writes
    # The largest request body the API reads (bytes); a larger one is refused (413) without being read.
    max_body_bytes: int = Field(default=1 << 20, ge=0)
    # Seconds before a message taken by a worker that died with it is delivered again (Redis broker).
    visibility_timeout: int = 900
    # A running job whose heartbeat is older than this many seconds is taken over by the next delivery (and
    # re-queued by the reaper when no message for it is left). Workers beat every min(10, this / 3) s.
    job_stale_seconds: float = Field(default=60.0, gt=0)
    # Transient failures (database or broker unreachable) are retried this many times, after
    # job_retry_delay * 2**n seconds capped at job_retry_delay_max (defaults: about 7 minutes in all).
    job_retries: int = Field(default=10, ge=0)
    job_retry_delay: float = Field(default=2.0, ge=0)
    job_retry_delay_max: float = Field(default=60.0, ge=0)
    # How often every worker process and API process looks for jobs without an owner (0: never), and how
    # many times one job is re-queued before it is failed instead.
    reaper_seconds: float = Field(default=30.0, ge=0)
    job_max_requeues: int = Field(default=3, ge=0)
    # Memory for evaluating circuits several to a forward pass (their activation differences), in MiB.
    eval_memory_mb: int = 1024
    # A peak-memory budget for discovery, in MiB (0: none): attribution runs each batch in micro-batches of
    # facts whose estimated peak fits it, and evaluation sizes its passes and caches by it (replacing
    # eval_memory_mb). `atlas discover --max-memory 6GB` gives it for one run.
    max_memory_mb: int = Field(default=0, ge=0)
    # CPU threads for torch; 0 leaves torch's default.
    threads: int = 0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
