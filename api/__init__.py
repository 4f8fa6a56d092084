"""The atlas's HTTP API (FastAPI): read the catalogue, schedule discovery jobs. `api.app:create_app()` builds
the app; `api.server.serve()` runs it under uvicorn (`atlas serve`). Nothing here imports torch: the API
reads the database and sends job ids to the workers."""
