"""The atlas's torch-free vocabulary: the graph's index space, run parameters and their validation, the
attribution methods' names, the typed errors every layer raises, the relation corpus and its loader, which
model names can be had, the ATLAS_* settings, and JSON-safe floats.

Everything here imports numpy at most (and pydantic, huggingface_hub where its job needs them), so the API,
the job queue and the catalogue can validate a request, key a run or re-cut a circuit without loading the
model stack. Nothing here imports the rest of the project (pyproject.toml's import contracts check it).
"""
