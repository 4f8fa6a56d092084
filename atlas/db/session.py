"""Sessions on the catalogue: `transaction`, one unit of work committed whole or not at all. Its own module so
that the read side (atlas.db.queries, browse, recut, records) needs nothing of the write side
(atlas.db.store), which builds a circuit's record with the read side's code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session


@contextmanager
def transaction(target: Engine | Session, write: bool = False) -> Iterator[Session]:
    """A session in its own transaction: committed on success, rolled back on any error. Given a session
    already in a transaction, a savepoint inside it (the caller commits). `write`: on SQLite, take the write
    lock at the start (concurrent writers then wait their turn instead of failing)."""
    if isinstance(target, Session):
        if target.in_transaction():
            with target.begin_nested():
                yield target
        else:
            with target.begin():
                yield target
        return
    bind = target.execution_options(sqlite_begin="IMMEDIATE") if write else target
    with Session(bind, expire_on_commit=False) as session, session.begin():
        yield session
