"""What every command module of the `atlas` CLI shares: bad input as one `error:` line and exit status 2,
JSON and number output, the `--database-url` option, quiet model libraries and the facts progress bar.

Imports no torch.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from atlas.db import CatalogueError
from atlas.spec.errors import AtlasError
from atlas.spec.json_safe import finite


def is_user_error(error: BaseException) -> bool:
    """Bad input (any of the project's typed errors): one line on stderr, exit status 2."""
    return isinstance(error, AtlasError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known bad input ends with one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except Exception as error:
        if not is_user_error(error):
            raise
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


@contextmanager
def catalogue_errors() -> Iterator[None]:
    """The catalogue's and the corpus's bad input, and a database that is unreachable or not migrated, end
    with one `error:` line on stderr and exit status 2."""
    from atlas.spec.corpus import CorpusError

    try:
        yield
    except (CatalogueError, CorpusError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except (OperationalError, ProgrammingError) as error:
        first = str(error.orig or error).strip().splitlines()[0]
        schema = isinstance(error, ProgrammingError) or "no such table" in first or "no such column" in first
        hint = " (run `atlas db upgrade` first?)" if schema else ""  # not for a database that is unreachable
        click.echo(f"error: database: {first}{hint}", err=True)
        sys.exit(2)


url_option = click.option(
    "--database-url",
    "url",
    default=None,
    help="Database URL [ATLAS_DATABASE_URL, else the embedded SQLite file].",
)


def catalogue_at(url: str | None) -> Engine:
    """The catalogue at `url` (`--database-url`; None: ATLAS_DATABASE_URL's, else the embedded file)."""
    from atlas.db.engine import make_engine

    return make_engine(url)


def echo_json(value: Any) -> None:
    """`value` as indented JSON, NaN and infinities as null."""
    click.echo(json.dumps(finite(value), indent=2, ensure_ascii=False))


def fixed(value: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals; None as `-`."""
    return "-" if value is None else f"{value:.{digits}f}"


def significant(value: float | None) -> str:
    """A p- or q-value: two significant digits."""
    return "-" if value is None else f"{value:.2g}"


def quiet_libraries() -> None:
    """No progress bars or warnings from the model libraries (before a model loads)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def fact_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of facts scored, shown only on a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="fact", disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
