"""Stub of `datasets.arrow_dataset` (see the package docstring)."""


class Dataset:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("datasets is a stub here (benchmarks/gpu_stubs): install the real package")
