"""Schema migrations (Alembic), run from code so every process agrees on the script location.

Alembic (with Mako) is about 10 MB of memory, so it is imported only to migrate. The schema
check that `/readyz` and the CLI make, `current_and_head()`, reads the `alembic_version` row
with one query and the newest revision from the scripts' own `revision = "..."` lines.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from bridge.db import read_only

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# `revision = "0005"` and `down_revision = "0004"` (or None), annotated or not.
_REVISION = re.compile(
    r"""^(down_revision|revision)\s*(?::[^=\n]+)?=\s*(?:"([^"]+)"|'([^']+)'|None)\s*$""", re.M
)


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema up to `revision`."""
    from alembic import command

    cfg = _config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Step the schema back to `revision` (e.g. "base")."""
    from alembic import command

    cfg = _config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


@functools.cache
def head_revision() -> str | None:
    """The newest revision among the scripts in migrations/versions (None if there are none):
    the one no other script names as its `down_revision`. Read once per process."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for name, double, single in _REVISION.findall(script.read_text(encoding="utf-8")):
            value = double or single
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have more than one head: {sorted(heads)}")
    return next(iter(heads), None)


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None when it was never migrated); a plain read, no lock."""
    with read_only(engine).connect() as connection:
        try:
            found = connection.scalar(text("SELECT version_num FROM alembic_version"))
        except DBAPIError:
            if inspect(connection).has_table("alembic_version"):
                raise  # the table is there: the error is something else
            return None
    return None if found is None else str(found)


def current_and_head(engine: Engine) -> tuple[str | None, str | None]:
    """The database's revision and the newest one in the code."""
    return current_revision(engine), head_revision()
