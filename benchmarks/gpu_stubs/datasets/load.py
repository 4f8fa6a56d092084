"""Stub of `datasets.load` (see the package docstring)."""


def load_dataset(*args: object, **kwargs: object) -> None:
    raise RuntimeError("datasets is a stub here (benchmarks/gpu_stubs): install the real package")
