"""The computation graph circuits are cut from, as dense index spaces.

Writers (what adds to the residual stream): `input`, each head `a{L}.h{H}`, each MLP `m{L}`.
Readers (what reads the residual stream): each head's q, k and v inputs `a{L}.h{H}<q>`, each MLP `m{L}`,
and `logits`. An edge joins a writer to every later reader; edge scores live in a dense
`[n_writers, n_readers]` tensor and names are views over its indices (EAP-IG's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int

    # Writer indices: 0 is `input`; layer L's heads follow at 1 + L*(H+1) + h, then its MLP.
    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    # Reader indices: layer L's block of 3H+1 is [q heads, k heads, v heads, mlp]; `logits` is last.
    def qkv_reader(self, layer: int, which: int, head: int) -> int:
        return layer * (3 * self.n_heads + 1) + which * self.n_heads + head

    def mlp_reader(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_reader(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1)

    @property
    def n_readers(self) -> int:
        return self.logits_reader + 1

    def writers_before_attention(self, layer: int) -> int:
        """How many writers feed layer `layer`'s heads: input and everything in earlier layers."""
        return 1 + layer * (self.n_heads + 1)

    def writers_before_mlp(self, layer: int) -> int:
        return self.writers_before_attention(layer) + self.n_heads

    @cached_property
    def writer_names(self) -> tuple[str, ...]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{head}" for head in range(self.n_heads)] + [f"m{layer}"]
        return tuple(names)

    @cached_property
    def reader_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for layer in range(self.n_layers):
            for which in QKV:
                names += [f"a{layer}.h{head}<{which}>" for head in range(self.n_heads)]
            names.append(f"m{layer}")
        return (*names, "logits")

    @cached_property
    def reader_nodes(self) -> tuple[str, ...]:
        """The node each reader belongs to (`a3.h5<q>` -> `a3.h5`)."""
        return tuple(name.split("<")[0] for name in self.reader_names)

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return (*self.writer_names, "logits")

    @cached_property
    def writer_of_reader_node(self) -> torch.Tensor:
        """For each reader, the writer index of the same node (-1 for logits): `[n_readers]`."""
        index = {name: i for i, name in enumerate(self.writer_names)}
        return torch.tensor([index.get(node, -1) for node in self.reader_nodes])

    @cached_property
    def valid_edges(self) -> torch.Tensor:
        """Bool `[n_writers, n_readers]`: True where the writer comes before the reader."""
        valid = torch.zeros(self.n_writers, self.n_readers, dtype=torch.bool)
        for layer in range(self.n_layers):
            block = slice(self.qkv_reader(layer, 0, 0), self.mlp_reader(layer))
            valid[: self.writers_before_attention(layer), block] = True
            valid[: self.writers_before_mlp(layer), self.mlp_reader(layer)] = True
        valid[:, self.logits_reader] = True
        return valid

    @property
    def n_edges(self) -> int:
        return int(self.valid_edges.sum())

    def edge_name(self, writer: int, reader: int) -> str:
        return f"{self.writer_names[writer]}->{self.reader_names[reader]}"

    def parse_edge(self, name: str) -> tuple[int, int]:
        """(writer, reader) indices of an edge name such as `a0.h1->a2.h3<q>`."""
        writer, sep, reader = name.partition("->")
        try:
            if not sep:
                raise ValueError
            return self.writer_names.index(writer), self.reader_names.index(reader)
        except ValueError:
            raise ValueError(
                f"no edge named {name!r} in a {self.n_layers}-layer, {self.n_heads}-head graph"
            ) from None
