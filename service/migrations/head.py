"""Start-up's migration when there is nothing to migrate: one read, and no Alembic import.

Importing Alembic (and the Mako templates it loads) costs ~0.8 s of every start, though a restart almost always
finds the database at this release's newest revision. `upgrade_at_start` reads that revision from the files in
versions/ (each declares `revision` and `down_revision`; the head is the one no other names) and the one row of
`alembic_version`; when they match and every table of the models is there, it is done. Anything else (no
version table, an older or unknown revision, a missing table, a versions folder it cannot read) goes to
service.migrations.runner.upgrade_database, which decides under the migration lock as before.
tests/test_migrations_head.py holds the file reading to Alembic's own head.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

VERSIONS = Path(__file__).resolve().parent / "versions"
_REVISION = re.compile(r"^revision\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\b[^=\n]*=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


@cache
def head_from_files(versions: Path = VERSIONS) -> str | None:
    """The one revision no other revision follows, or None when the files do not say it plainly."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        if path.name == "__init__.py" or path.name.startswith(".#"):  # what Alembic skips, and only that
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        revision, down = _REVISION.findall(text), _DOWN.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        followed.update(_QUOTED.findall(down[0]))
    heads = revisions - followed
    return next(iter(heads)) if len(heads) == 1 and followed <= revisions else None


def at_head(engine: Engine) -> bool:
    """Whether the database records this release's head and has every table the models name (read-only)."""
    head = head_from_files()
    if head is None:
        return False
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        if "alembic_version" not in names or not set(SQLModel.metadata.tables) <= names:
            return False
        versions = [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    return versions == [head]


def upgrade_at_start(engine: Engine) -> None:
    """Bring the database to head as `upgrade_database` does, skipping Alembic when it is there already."""
    if at_head(engine):
        return
    from service.migrations.runner import upgrade_database  # lazy: Alembic only when there is work

    upgrade_database(engine)
