"""service.table_init: every table model built by `Table.__init__` is the object SQLModel's constructor builds:
the same values, pydantic's bookkeeping, SQLAlchemy's state and history, and the same row once flushed."""

from __future__ import annotations

import enum
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.base import instance_state
from sqlmodel import Session, SQLModel

from service import models, table_init
from service.table_init import Table

TABLES = sorted((cls for cls in vars(models).values()
                 if isinstance(cls, type) and issubclass(cls, Table) and hasattr(cls, "__table__")),
                key=lambda cls: cls.__name__)
AT = datetime(2026, 12, 4, 15, 0, 7, 123456, tzinfo=UTC)


def _sample(annotation: Any, name: str) -> Any:
    """A plausible value of the field's type (the first non-None member of an Optional)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(models))  # noqa: S307 - the models' own annotations
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) not in (list, dict):
        return _sample(args[0], name)
    origin = typing.get_origin(annotation) or annotation
    if origin is list:
        return [_sample(args[0], name) if args else "a"]
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return next(iter(origin))
    samples: dict[Any, Any] = {bool: True, int: 7, float: 1.5, str: f"{name}-value", datetime: AT,
                               dict: {"k": 1}, bytes: b"x", Any: {"k": 1}}
    if origin in samples:
        return samples[origin]
    raise AssertionError(f"no sample for {name}: {annotation!r}")


def _kwargs(cls: type[SQLModel], *, every: bool) -> dict[str, Any]:
    return {name: _sample(field.annotation, name) for name, field in cls.model_fields.items()
            if (every or field.is_required()) and name != "id"}


def _built(cls: type[SQLModel], kwargs: dict[str, Any], *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(table_init, "_plan", lambda _cls: None)  # SQLModel's own constructor
        return cls(**kwargs)


def _comparable(value: Any) -> Any:
    """A default factory's time differs between two builds by microseconds: compare times to the minute."""
    if isinstance(value, datetime):
        return ("datetime", value.tzinfo, value.replace(second=0, microsecond=0))
    return value


def _picture(obj: Any) -> dict[str, Any]:
    state = instance_state(obj)
    values = {k: _comparable(v) for k, v in obj.__dict__.items() if k != "_sa_instance_state"}
    mapper = sa_inspect(type(obj))
    return {
        "keys in order": list(values),
        "values": values,
        "fields set": obj.__pydantic_fields_set__,
        "extra": obj.__pydantic_extra__,
        "private": obj.__pydantic_private__,
        "committed": {k: _comparable(v) for k, v in state.committed_state.items()},
        "modified": state.modified,
        "history": {attr.key: tuple(tuple(_comparable(v) for v in part) for part in state.attrs[attr.key].history)
                    for attr in mapper.column_attrs},
        "transient": state.transient,
    }


def _stored(obj: Any) -> dict[str, Any]:
    """The row the ORM flushes for `obj`, read back (a fresh in-memory database each time)."""
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        session.add(obj)
        session.commit()
        row = session.connection().execute(type(obj).__table__.select()).one()._asdict()
    engine.dispose()
    return {k: _comparable(v) for k, v in row.items()}


def test_plan_fast_path_every_table() -> None:
    """Every table takes the fast path: a fallback would silently cost the old ~115 us again."""
    assert len(TABLES) >= 20
    assert [cls.__name__ for cls in TABLES if table_init._plan(cls) is None] == []


@pytest.mark.parametrize("every", [False, True], ids=["required-only", "every-field"])
@pytest.mark.parametrize("cls", TABLES, ids=lambda cls: cls.__name__)
def test_build_table_same_as_sqlmodel(cls: type[SQLModel], every: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = _kwargs(cls, every=every)
    fast = _built(cls, kwargs, fast=True, monkeypatch=monkeypatch)
    slow = _built(cls, kwargs, fast=False, monkeypatch=monkeypatch)
    assert _picture(fast) == _picture(slow)
    assert {k: _comparable(v) for k, v in fast.model_dump().items()} == {
        k: _comparable(v) for k, v in slow.model_dump().items()}
    assert _stored(fast) == _stored(slow)


@pytest.mark.parametrize("cls", TABLES, ids=lambda cls: cls.__name__)
def test_build_table_default_factories_fresh_per_row(cls: type[SQLModel]) -> None:
    """A mutable default (a list, a dict) is a new object in every row, never shared between two."""
    kwargs = _kwargs(cls, every=False)
    one, two = cls(**kwargs), cls(**kwargs)
    for name, value in one.__dict__.items():
        if isinstance(value, list | dict) and name not in kwargs:
            assert value is not two.__dict__[name], name


def test_build_lead_changes_after_construction_are_tracked() -> None:
    """An attribute changed after construction is flushed as the constructor's own values are."""
    lead = models.Lead(broker_id=3, phone="+14155550123")
    lead.automated_count = 4
    lead.missed_call_at = AT
    stored = _stored(lead)
    assert stored["automated_count"] == 4
    assert stored["missed_call_at"] == _comparable(AT)
    assert stored["phone"] == "+14155550123"


def test_build_table_ignores_unknown_arguments_and_keeps_required_unset() -> None:
    event = models.LeadEvent(lead_id=1, broker_id=2, kind="missed_call", not_a_field=5)
    assert "not_a_field" not in event.__dict__
    assert event.__pydantic_fields_set__ == {"lead_id", "broker_id", "kind"}


def test_validate_table_partial_init_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """`model_validate` (SQLModel's partial construction) builds the same object with either constructor."""
    data = {"broker_id": 1, "phone": "+14155550123", "automated_count": 2,
            "missed_call_at": AT + timedelta(minutes=1)}
    fast = models.Lead.model_validate(data)
    with monkeypatch.context() as patch:
        patch.setattr(table_init, "_plan", lambda _cls: None)
        slow = models.Lead.model_validate(data)
    assert _picture(fast) == _picture(slow)
