"""Schema migrations with Alembic, shipped inside the package and configured in code (no alembic.ini).

- `textback db upgrade` brings the database to the newest revision and prints from and to which; the service
  does the same at start-up (service.migrations.head.upgrade_at_start, called by build_context: a database at
  head is one read and no Alembic import; otherwise service.migrations.runner.upgrade_database), under a lock
  (PostgreSQL: an advisory lock; SQLite: the database's write lock) so processes starting together take turns.
- `textback db current` prints the database's revision and this release's head.
- A database made before migrations (tables, no `alembic_version`) is first brought to the baseline, revision
  0001 (service/migrations/baseline.py): missing tables, columns, NOT NULLs, unique constraints and indexes are
  added, constraints get their conventional names, then it is stamped (service.migrations.legacy). Rows that
  would break a unique constraint stop it with a message naming the table, the columns and the count, before
  anything is changed.

Adding a revision (after changing service/models.py):

    uv run --frozen textback db revision -m "lead: add the broker's note"

autogenerates versions/NNNN_<slug>.py by comparing the models with a scratch SQLite database upgraded to the
current head (batch operations, so SQLite can alter tables; plain SQLAlchemy types). Read it, adjust it (data
steps, server defaults for NOT NULL columns on tables with rows), and run tests/test_migrations.py: its
fresh-database test fails while a model change has no revision. Two branches that each added a revision: give
the later one `down_revision` = the other's id (or `textback db revision --merge`), so there is one head.
Constraint and index names follow service.models.NAMING_CONVENTION; name them as it would.
"""
