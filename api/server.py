"""`atlas serve`: the API under uvicorn, `workers` processes, each building the app with
`api.app:create_app()` (settings from ATLAS_* variables)."""

from __future__ import annotations


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Serve the API until interrupted. Access logs carry method, path with query and status: never a header,
    and token-like query values are redacted (api.access_log), so never a bearer token."""
    import os

    import uvicorn

    # One BLAS thread per server process: the overlap matrix's products are small, and a second thread per
    # process only contends with the other processes for the cores (it doubled wall time in measurements).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=max(1, workers),
        access_log=access_log,
        log_level=log_level,
        proxy_headers=False,
    )
