"""The computation graph as the torch core uses it: `atlas.spec.graph.GraphIndex` (the index spaces and
names, in numpy) with its masks as torch tensors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from atlas.spec.graph import QKV as QKV  # re-exported: the hooks name q/k/v readers by it
from atlas.spec.graph import GraphIndex


@dataclass(frozen=True)
class Graph(GraphIndex):
    @cached_property
    def valid_edges(self) -> torch.Tensor:
        """Bool `[n_writers, n_readers]`: True where the writer comes before the reader."""
        return torch.from_numpy(self.valid.copy())

    @cached_property
    def writer_of_reader_node(self) -> torch.Tensor:
        """For each reader, the writer index of the same node (-1 for logits): `[n_readers]`."""
        return torch.from_numpy(self.reader_writer.copy())
