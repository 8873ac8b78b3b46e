"""ORM objects built from a table statement's RETURNING row, as the ORM's loader builds them.

A hot statement written against the table (an UPDATE ... RETURNING every column, built once and bound by name)
costs a fraction of the ORM's entity statement, whose cache key SQLAlchemy rebuilds on every call; these helpers
turn its row into the object the ORM's statement would have given: attribute values in place, no history.

The loader's `load` event is not fired: nothing listens to it on the models built here. A column made `Mutable`
(whose tracking starts in that event) would need the ORM's statement back.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Row
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

__all__ = ["attached", "columns", "detached", "row_keys"]

_M = TypeVar("_M")


_KEYS: dict[str, tuple[str, ...]] = {}  # by table name (SQLModel's classes are not typed as hashable)


def row_keys(model: type[Any]) -> tuple[str, ...]:
    """The model's attributes, each the table column of the same name (RuntimeError if they differ)."""
    name = model.__table__.name
    keys = _KEYS.get(name)
    if keys is None:
        keys = tuple(prop.key for prop in sa_inspect(model).column_attrs)
        if set(keys) != set(model.__table__.c.keys()):
            raise RuntimeError(f"{model.__name__}'s attributes and its table's columns differ")
        _KEYS[name] = keys
    return keys


def columns(model: type[Any]) -> list[Any]:
    """Every column of the model's table, in `row_keys` order: what to put in RETURNING."""
    table = model.__table__
    return [table.c[key] for key in row_keys(model)]


def detached(model: type[_M], row: Row[Any]) -> _M:
    """The row (every column, in `row_keys` order) as a detached object: a copy to read outside a session."""
    obj: _M = sa_inspect(model).class_manager.new_instance()
    obj.__dict__.update(zip(row_keys(model), row, strict=True))
    make_transient_to_detached(obj)
    return obj


def attached(session: Session, model: type[_M], row: Row[Any]) -> _M:
    """The row as a persistent object of `session`, as if the session had loaded it (changes to it flush)."""
    obj = detached(model, row)
    session.add(obj)
    return obj
