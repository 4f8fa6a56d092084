"""A stand-in for Hugging Face `datasets`, for GPU machines without it (or without pyarrow, 55 MB).

transformer_lens imports `Dataset`, `IterableDataset` and `load_dataset` at import time, for its dataset
utilities only; attribution never touches them. benchmarks/gpu_attribution.sh puts this folder on
PYTHONPATH only when the real package cannot be imported. Anything that tries to use it fails loudly.
"""

from datasets.arrow_dataset import Dataset
from datasets.iterable_dataset import IterableDataset
from datasets.load import load_dataset

__all__ = ["Dataset", "IterableDataset", "load_dataset"]
