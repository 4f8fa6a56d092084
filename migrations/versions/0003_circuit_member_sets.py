"""circuit member sets: each circuit's heads/MLPs and edges as compact graph indices

Two columns on `circuits`: `node_set`, the sorted writer indices of the heads and MLPs in the circuit, and
`edge_set`, the sorted flat indices (writer * n_readers + reader) of the edges in it, both little-endian int32
in the layout of atlas.core.graph.Graph. The overlap matrix reads them (one row per circuit) instead of
aggregating every circuit's edge rows. Circuits stored before this revision are filled here from their
`circuit_nodes` and `circuit_edges` rows, with the graph's index arithmetic restated (a migration does not
import the code it may outlive).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QKV = {"q": 0, "k": 1, "v": 2}
BATCH = 200  # circuits per UPDATE batch


def _writer(kind: str, layer: int | None, head: int | None, n_heads: int) -> int:
    """Graph.head_writer / mlp_writer; `input` is 0."""
    if kind == "input":
        return 0
    assert layer is not None
    return 1 + layer * (n_heads + 1) + (head if kind == "head" and head is not None else n_heads)


def _reader(kind: str, layer: int | None, head: int | None, port: str, n_layers: int, n_heads: int) -> int:
    """Graph.qkv_reader / mlp_reader / logits_reader."""
    if kind == "logits":
        return n_layers * (3 * n_heads + 1)
    assert layer is not None
    if kind == "head":
        assert head is not None
        return layer * (3 * n_heads + 1) + QKV[port] * n_heads + head
    return layer * (3 * n_heads + 1) + 3 * n_heads


def _pack(values: set[int]) -> bytes:
    packed = array("i", sorted(values))  # C int: 32 bits on every platform Python supports
    if packed.itemsize != 4:  # pragma: no cover
        raise RuntimeError("array('i') is not 32-bit here")
    if array("i", [1]).tobytes()[0] != 1:  # pragma: no cover - big-endian host
        packed.byteswap()
    return packed.tobytes()


def _fill(connection: sa.Connection) -> None:
    shapes = {
        circuit_id: (n_layers, n_heads)
        for circuit_id, n_layers, n_heads in connection.execute(
            sa.text(
                "SELECT c.id, m.n_layers, m.n_heads FROM circuits c JOIN runs r ON r.id = c.run_id"
                " JOIN models m ON m.id = r.model_id WHERE c.node_set IS NULL OR c.edge_set IS NULL"
            )
        )
    }
    ids = sorted(shapes)
    for first in range(0, len(ids), BATCH):
        batch = ids[first : first + BATCH]
        low, high = batch[0], batch[-1]
        nodes: dict[int, set[int]] = {i: set() for i in batch}
        rows = connection.execute(
            sa.text(
                "SELECT n.circuit_id, c.kind, c.layer, c.head FROM circuit_nodes n"
                " JOIN components c ON c.id = n.component_id"
                " WHERE n.circuit_id BETWEEN :low AND :high AND n.in_circuit AND c.kind IN ('head', 'mlp')"
            ),
            {"low": low, "high": high},
        )
        for circuit_id, kind, layer, head in rows:
            if circuit_id in nodes:
                nodes[circuit_id].add(_writer(kind, layer, head, shapes[circuit_id][1]))
        edges: dict[int, set[int]] = {i: set() for i in batch}
        rows = connection.execute(
            sa.text(
                "SELECT e.circuit_id, w.kind, w.layer, w.head, r.kind, r.layer, r.head, e.port"
                " FROM circuit_edges e JOIN components w ON w.id = e.writer_id"
                " JOIN components r ON r.id = e.reader_id"
                " WHERE e.circuit_id BETWEEN :low AND :high AND e.in_circuit ORDER BY e.circuit_id"
            ),
            {"low": low, "high": high},
        )
        for circuit_id, group in groupby(rows, key=lambda row: row[0]):
            if circuit_id not in edges:
                continue
            n_layers, n_heads = shapes[circuit_id]
            n_readers = n_layers * (3 * n_heads + 1) + 1
            edges[circuit_id] = {
                _writer(wk, wl, wh, n_heads) * n_readers + _reader(rk, rl, rh, port, n_layers, n_heads)
                for _, wk, wl, wh, rk, rl, rh, port in group
            }
        updates: list[dict[str, Any]] = [
            {"id": i, "node_set": _pack(nodes[i]), "edge_set": _pack(edges[i])} for i in batch
        ]
        connection.execute(
            sa.text(
                "UPDATE circuits SET node_set = :node_set, edge_set = :edge_set WHERE id = :id"
            ).bindparams(
                sa.bindparam("node_set", type_=sa.LargeBinary()),
                sa.bindparam("edge_set", type_=sa.LargeBinary()),
            ),
            updates,
        )


def upgrade() -> None:
    # Plain ADD COLUMN on every backend (no batch table copy on SQLite). Nullable: NULL only ever means
    # "not filled yet", and the fill below leaves no circuit so.
    op.add_column("circuits", sa.Column("node_set", sa.LargeBinary(), nullable=True))
    op.add_column("circuits", sa.Column("edge_set", sa.LargeBinary(), nullable=True))
    _fill(op.get_bind())


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN directly (SQLite 3.35+): a batch copy of `circuits` would drop the table,
    # and with foreign keys on, SQLite's implicit DELETE would cascade to the circuits' rows.
    op.execute("ALTER TABLE circuits DROP COLUMN edge_set")
    op.execute("ALTER TABLE circuits DROP COLUMN node_set")
