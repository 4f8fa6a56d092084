"""Job kinds. Each kind is a torch-free request class in its own module (`discover`, `edit`, `analysis`):
what the job asks, its key, its validation, what of it the catalogue already holds, and `run`, which does
the work with the same plain function the inline command calls. `registry` lists the kinds; `submit`
records a job of any kind; `runtime` runs one on a worker (claim, heartbeat, progress, finish).

Adding a kind: its module here, one entry in `registry`, a test (docs/architecture.md, "Adding a job kind").
"""
