"""The atlas's torch-free vocabulary: the graph's index space, run parameters and their validation, the
attribution methods' names, and the typed errors every layer raises.

Everything here imports numpy at most, so the API, the job queue and the catalogue can validate a request,
key a run or re-cut a circuit without loading the model stack. Nothing here imports the rest of the project.
"""
