"""A database made before migrations (by `create_schema` of an earlier release: tables, no alembic_version) is
brought to the baseline revision here, inside the runner's transaction and lock, before it is stamped.

What an earlier release may have left: tables it never had, columns added later as nullable (old releases
added columns with a bare ALTER TABLE, NOT NULL or not), unique constraints never added to a table that
already existed, indexes, and the database's own names for constraints instead of the conventional ones.
Everything is checked first (rows that would break a new unique constraint, NULLs in a column that must
not have them and has no default to fill); a problem stops it with MigrationRefused before anything changes.

PostgreSQL is altered in place (ADD COLUMN, SET NOT NULL, ADD CONSTRAINT, RENAME CONSTRAINT, CREATE INDEX).
SQLite cannot add a constraint to a table, so a table that needs one is rebuilt from the baseline's definition
(SQLite's documented procedure: create the new table, copy the rows, drop the old, rename; foreign keys are
off meanwhile, the runner's doing); a table that only lacks nullable columns or indexes gets them in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic_core import PydanticUndefined
from sqlalchemy.engine import Connection
from sqlalchemy.schema import AddConstraint, CreateTable
from sqlmodel import SQLModel

from service.errors import MigrationRefused


@dataclass
class TablePlan:
    """What one existing table lacks against the baseline."""

    table: sa.Table
    missing_columns: list[sa.Column[Any]] = field(default_factory=list)
    not_null: list[sa.Column[Any]] = field(default_factory=list)  # NOT NULL in the baseline, nullable here
    missing_uniques: list[sa.UniqueConstraint] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)  # constraint (old name, conventional name)
    missing_fks: list[sa.ForeignKeyConstraint] = field(default_factory=list)
    missing_indexes: list[sa.Index] = field(default_factory=list)
    fills: dict[str, object] = field(default_factory=dict)  # column -> value for its NULLs

    @property
    def needs_rebuild_on_sqlite(self) -> bool:
        return bool(self.not_null or self.missing_uniques or self.renames or self.missing_fks)

    @property
    def empty(self) -> bool:
        return not (self.missing_columns or self.needs_rebuild_on_sqlite or self.missing_indexes)


@dataclass
class Adoption:
    """What bringing a pre-migration database to the baseline did."""

    created_tables: list[str] = field(default_factory=list)
    changed_tables: list[str] = field(default_factory=list)


def _model_default(table: str, column: str) -> object:
    """The value the models give `column` of `table` when none is set (to fill NULLs), or PydanticUndefined."""
    for mapper in SQLModel._sa_registry.mappers:
        model = mapper.class_
        if getattr(model, "__tablename__", None) != table:
            continue
        info = model.model_fields.get(column)
        if info is None:
            return PydanticUndefined
        if info.default_factory is not None:
            return info.get_default(call_default_factory=True)
        return PydanticUndefined if info.default is None else info.default
    return PydanticUndefined


def _cols(names: list[str | None] | list[str]) -> tuple[str, ...]:
    return tuple(sorted(str(n) for n in names))


def plan_table(conn: Connection, table: sa.Table) -> TablePlan:
    inspector = sa.inspect(conn)
    plan = TablePlan(table)
    columns = {c["name"]: c for c in inspector.get_columns(table.name)}
    for column in table.columns:
        if column.name not in columns:
            plan.missing_columns.append(column)
        if not column.nullable and not column.primary_key and columns.get(column.name, {"nullable": True})["nullable"]:
            plan.not_null.append(column)
    uniques = {_cols(u["column_names"]): u["name"] for u in inspector.get_unique_constraints(table.name)}
    indexes = inspector.get_indexes(table.name)
    for constraint in sorted((c for c in table.constraints if isinstance(c, sa.UniqueConstraint)),
                             key=lambda c: str(c.name)):
        key = _cols([c.name for c in constraint.columns])
        if key not in uniques:
            plan.missing_uniques.append(constraint)
        elif uniques[key] != constraint.name:  # on SQLite an unnamed one (None): the rebuild names it
            plan.renames.append((str(uniques[key]), str(constraint.name)))
    names = {i["name"] for i in indexes}
    plan.missing_indexes = [i for i in sorted(table.indexes, key=lambda i: str(i.name)) if i.name not in names]
    reflected_fks = {(_cols(f["constrained_columns"]), f["referred_table"]): f["name"]
                     for f in inspector.get_foreign_keys(table.name)}
    for fk in table.foreign_key_constraints:
        fk_key = (_cols([c.name for c in fk.columns]), fk.referred_table.name)
        if fk_key not in reflected_fks:
            plan.missing_fks.append(fk)
        elif reflected_fks[fk_key] != fk.name:  # on SQLite an unnamed one (None): the rebuild names it
            plan.renames.append((str(reflected_fks[fk_key]), str(fk.name)))
    pk = inspector.get_pk_constraint(table.name).get("name")
    if conn.dialect.name != "sqlite" and pk != table.primary_key.name:  # SQLite does not keep a PK's name
        plan.renames.append((str(pk), str(table.primary_key.name)))
    for column in plan.not_null:
        value = _model_default(table.name, column.name)
        if value is not PydanticUndefined:
            plan.fills[column.name] = value
    return plan


def _duplicates(conn: Connection, table: sa.Table, constraint: sa.UniqueConstraint) -> tuple[int, int]:
    """(values that occur more than once, rows holding them) for the columns of `constraint`."""
    cols = [table.c[c.name] for c in constraint.columns]
    groups = (sa.select(sa.func.count().label("n")).select_from(table)
              .where(*(c.is_not(None) for c in cols)).group_by(*cols).having(sa.func.count() > 1).subquery())
    row = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(groups.c.n), 0))).one()
    return int(row[0]), int(row[1])


def check(conn: Connection, plans: list[TablePlan]) -> None:
    """MigrationRefused naming every blocker (duplicates, NULLs with nothing to fill them), before any change."""
    problems: list[str] = []
    for plan in plans:
        table = plan.table
        present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for constraint in plan.missing_uniques:
            names = [c.name for c in constraint.columns]
            if not set(names) <= present:
                continue  # a column added now holds no values yet
            values, holding = _duplicates(conn, table, constraint)
            if values:
                problems.append(f"{table.name}({', '.join(names)}): {values} value(s) appear more than once, in "
                                f"{holding} rows; unique constraint {constraint.name} cannot be added")
        for column in plan.not_null:
            if column.name in plan.fills:
                continue
            if column.name in present:
                nulls = conn.execute(sa.select(sa.func.count()).select_from(table)
                                     .where(table.c[column.name].is_(None))).scalar_one()
            else:  # a new NOT NULL column: every existing row would be NULL
                nulls = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table.name))).scalar_one()
            if nulls:
                problems.append(f"{table.name}.{column.name}: {nulls} row(s) are NULL and the column must not be; "
                                f"no default to fill them with")
    if problems:
        raise MigrationRefused("the database cannot be upgraded as it is, nothing was changed: "
                               + "; ".join(problems) + ". Fix those rows, then run `textback db upgrade` again")


def _fill(conn: Connection, plan: TablePlan) -> None:
    for name, value in plan.fills.items():
        column = plan.table.c[name]
        conn.execute(sa.update(plan.table).where(column.is_(None)).values({name: value}))


def _apply_postgres(conn: Connection, plan: TablePlan) -> None:
    quote = conn.dialect.identifier_preparer.quote
    table = plan.table
    for column in plan.missing_columns:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")
    _fill(conn, plan)
    for column in plan.not_null:
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ALTER COLUMN {quote(column.name)} SET NOT NULL")
    for old, new in plan.renames:
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}")
    for constraint in [*plan.missing_uniques, *plan.missing_fks]:
        conn.execute(AddConstraint(constraint))
    for index in plan.missing_indexes:
        index.create(conn)


def _rebuild_sqlite(conn: Connection, plan: TablePlan) -> None:
    """The table made again from the baseline's definition, its rows copied (NULLs filled where they must not
    be), then its indexes."""
    table = plan.table
    scratch = table.to_metadata(table.metadata, name=f"_textback_new_{table.name}")  # beside the tables it refers to
    conn.execute(CreateTable(scratch))
    present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    old = sa.table(table.name, *(sa.column(name) for name in present))
    selected: list[Any] = []
    for column in table.columns:
        fill = plan.fills.get(column.name)
        value = sa.literal(fill, type_=column.type) if column.name in plan.fills else sa.null()
        if column.name not in present:
            selected.append(value)
        elif column.name in plan.fills and fill is not None:
            selected.append(sa.func.coalesce(old.c[column.name], value))
        else:
            selected.append(old.c[column.name])
    conn.execute(sa.insert(scratch).from_select([c.name for c in table.columns], sa.select(*selected)))
    quote = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"DROP TABLE {quote(table.name)}")
    conn.exec_driver_sql(f"ALTER TABLE {quote(scratch.name)} RENAME TO {quote(table.name)}")
    for index in table.indexes:
        index.create(conn)


def _apply_sqlite(conn: Connection, plan: TablePlan) -> None:
    if plan.needs_rebuild_on_sqlite:
        _rebuild_sqlite(conn, plan)
        return
    quote = conn.dialect.identifier_preparer.quote
    for column in plan.missing_columns:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(plan.table.name)} ADD COLUMN {quote(column.name)} {kind}")
    for index in plan.missing_indexes:
        index.create(conn)


def adopt(conn: Connection, baseline: sa.MetaData) -> Adoption:
    """Bring the pre-migration database on `conn` to `baseline` (the caller stamps it afterwards)."""
    existing = set(sa.inspect(conn).get_table_names())
    plans = [plan_table(conn, t) for t in baseline.sorted_tables if t.name in existing]
    check(conn, plans)
    done = Adoption()
    for table in baseline.sorted_tables:
        if table.name not in existing:
            table.create(conn)
            done.created_tables.append(table.name)
    apply = _apply_sqlite if conn.dialect.name == "sqlite" else _apply_postgres
    for plan in plans:
        if not plan.empty:
            apply(conn, plan)
            done.changed_tables.append(plan.table.name)
    return done
