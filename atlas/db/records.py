"""Circuit records: the body of GET /circuits/{id} (atlas.db.browse.circuit_full as compact UTF-8 JSON),
built when the circuit is stored, in the circuit's own transaction, and kept in `circuits.record_json`.
Reading one is then one column of one row: no ORM objects, no serialization (about 25 ms of CPU an answer
when it was built on every read).

A record is built from what the database gives back (timestamps as the backend returns them, JSON documents as
stored), so it equals what `circuit_full` answers later. What a record shows that can change after the
circuit is stored (its relation's content hash, when facts are added) is rewritten with that change. Circuits
stored before migration 0009 (or rows written by hand) have no record: `read` builds it, `fill_missing`
stores it. A change to what `circuit_full` answers needs a migration that sets `record_json` to NULL (then
`atlas db fill-records`), or stored records keep the old shape. No torch.
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from atlas.db import NotCatalogued
from atlas.db.browse import circuit_full
from atlas.db.models import Circuit, Run
from atlas.db.session import transaction
from atlas.spec.json_safe import dumps

FILL_BATCH = 50  # circuits per transaction in fill_missing


def build(target: Engine | Session, circuit_id: int) -> bytes:
    """The circuit's record as the API answers it (NotCatalogued if there is no such circuit)."""
    return dumps(circuit_full(target, circuit_id))


def write(session: Session, circuit_ids: list[int]) -> None:
    """Build and store the records of these circuits in the session's transaction. Objects the session holds
    are expired first, so the records hold what the database gives back, not the values Python wrote (an
    aware timestamp that SQLite returns naive, say)."""
    session.flush()
    session.expire_all()
    for circuit_id in circuit_ids:
        session.execute(
            update(Circuit).where(Circuit.id == circuit_id).values(record_json=build(session, circuit_id)),
            execution_options={"synchronize_session": False},
        )


def rewrite_relation(session: Session, relation_id: int) -> None:
    """Rewrite the stored records of the relation's circuits (its content hash changed)."""
    ids = session.scalars(
        select(Circuit.id)
        .join(Run, Circuit.run_id == Run.id)
        .where(Run.relation_id == relation_id, Circuit.record_json.is_not(None))
        .order_by(Circuit.id)
    ).all()
    write(session, list(ids))


def read(engine: Engine, circuit_id: int) -> bytes:
    """The circuit's stored record (a Core read of one column), or where none is stored the record built now
    (not stored: a read does not write). NotCatalogued if there is no such circuit."""
    with engine.connect() as connection:
        row = connection.execute(select(Circuit.record_json).where(Circuit.id == circuit_id)).one_or_none()
    if row is None:
        raise NotCatalogued(f"no circuit with id {circuit_id}")
    return bytes(row[0]) if row[0] is not None else build(engine, circuit_id)


def fill_missing(target: Engine, limit: int | None = None) -> int:
    """Build and store the records of circuits that have none (stored before migration 0009, or written by
    hand), FILL_BATCH circuits per transaction, at most `limit` (None: all); how many were filled."""
    filled = 0
    while limit is None or filled < limit:
        batch = FILL_BATCH if limit is None else min(FILL_BATCH, limit - filled)
        with transaction(target, write=True) as session:
            ids = list(
                session.scalars(
                    select(Circuit.id).where(Circuit.record_json.is_(None)).order_by(Circuit.id).limit(batch)
                )
            )
            write(session, ids)
        filled += len(ids)
        if len(ids) < batch:
            break
    return filled
