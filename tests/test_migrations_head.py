"""Start-up skips Alembic when the database is at head (service.migrations.head), and only then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db import make_engine
from service.migrations.head import at_head, head_from_files
from service.migrations.runner import head_revision, upgrade_database
from tests.helpers import REPO


def test_read_head_from_files_same_as_alembic() -> None:
    assert head_from_files() == head_revision()


def _versions(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "versions"
    folder.mkdir()
    for name, body in files.items():
        path = folder / name
        path.write_bytes(body) if isinstance(body, bytes) else path.write_text(body, encoding="utf-8")
    return folder


@pytest.mark.parametrize(("files", "head"), [
    ({"a.py": 'revision: str = "1"\ndown_revision = None\n', "b.py": "revision = '2'\ndown_revision = '1'\n"}, "2"),
    ({"a.py": 'revision = "1"\ndown_revision = None\n'}, "1"),
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision = "2"\ndown_revision = "1"\n',
      "c.py": 'revision = "3"\ndown_revision = "1"\n'}, None),  # two heads: Alembic decides
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision = "2"\n'}, None),  # no down_revision
    ({"a.py": 'revision = "2"\ndown_revision = "9"\n'}, None),  # follows a revision not here
    ({"a.py": 'down_revision = None\n'}, None),  # no revision
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision = "3"\ndown_revision = ("1", "2")\n',
      "c.py": 'revision = "2"\ndown_revision = "1"\n'}, "3"),  # a merge
    ({}, None),
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "_b.py": 'revision = "2"\ndown_revision = "1"\n'}, "2"),
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "__init__.py": "", ".#a.py": "lock"}, "1"),
    ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": b"\xff\xfe not text"}, None),
])
def test_read_head_from_files_only_when_plain(tmp_path: Path, files: dict[str, str | bytes],
                                              head: str | None) -> None:
    """Read as Alembic lists them (every .py but __init__ and editor locks); anything unclear is None."""
    assert head_from_files.__wrapped__(_versions(tmp_path, files)) == head


def test_at_head_only_after_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert not at_head(engine)  # nothing there
        upgrade_database(engine)
        assert at_head(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        assert not at_head(engine)  # an older revision: the runner upgrades it
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()})
            conn.execute(text("DROP TABLE linetypecache"))
        assert not at_head(engine)  # a table gone: left to the runner, as before
    finally:
        engine.dispose()


START = """
import json, sys
from service.db import make_engine
from service.migrations.head import at_head, upgrade_at_start
engine = make_engine(sys.argv[1])
upgrade_at_start(engine)
print(json.dumps({"alembic_imported": "alembic" in sys.modules, "at_head": at_head(engine)}))
"""


def test_start_at_head_imports_no_alembic(database_url: str) -> None:
    """The first start migrates (Alembic); a restart on the same database reads one row and imports none."""
    def start() -> dict[str, bool]:
        done = subprocess.run([sys.executable, "-c", START, database_url], cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert start() == {"alembic_imported": True, "at_head": True}
    assert start() == {"alembic_imported": False, "at_head": True}
