"""`Table`: the base of every table model, whose constructor builds the same object as SQLModel's, cheaper.

SQLModel builds a table row (`Lead(broker_id=1, phone=...)`) by setting each of its fields, defaults
included, through `setattr`: SQLAlchemy's attribute event, then pydantic's own `__setattr__`, field by field.
That is ~115 us for a row of twenty fields, and a missed call builds six rows. `Table.__init__` writes the
same values in one dict update and leaves SQLAlchemy's state as the events would have left it (each field
"set" on a transient object: committed as NO_VALUE, modified), so what the ORM flushes and what an attribute's
history says are unchanged; tests/test_table_init.py compares both constructions field by field, state and
all, on every table model.

Kept exactly as sqlmodel 0.0.50's `sqlmodel_table_construct` (its semantics, not its cost):
- a field given by name (or alias) takes that value, unvalidated (table models never validate on init);
- a field not given takes its default, a default factory called once per row; a required field not given
  stays unset (reading it raises, as before);
- `__pydantic_fields_set__` is the fields given; `__pydantic_extra__` and `__pydantic_private__` are None;
- arguments that are not fields are ignored; `model_validate`'s partial construction (SQLModel's
  `finish_init` off) does nothing here, as in SQLModel.

A model with relationships, a `model_post_init`, `extra="allow"`, a field SQLAlchemy does not instrument or
one with a `set` listener (an `@validates`) falls back to SQLModel's constructor (none of textback's tables has one).
"""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.base import NO_VALUE, instance_state
from sqlmodel import SQLModel
from sqlmodel._compat import finish_init, sqlmodel_init

__all__ = ["Table"]

# Per model: its fields as (name, alias or None, FieldInfo), or None when the model needs SQLModel's constructor.
_PLANS: dict[type, tuple[tuple[str, str | None, FieldInfo], ...] | None] = {}


def _plan(cls: type[SQLModel]) -> tuple[tuple[str, str | None, FieldInfo], ...] | None:
    if cls in _PLANS:
        return _PLANS[cls]
    configure_mappers()  # each attribute's implementation (and its listeners) exists once mappers are configured
    manager = getattr(cls, "_sa_class_manager", None)
    plan: tuple[tuple[str, str | None, FieldInfo], ...] | None = tuple(
        (name, field.alias if field.alias and field.alias != name else None, field)
        for name, field in cls.model_fields.items())
    if (manager is None or cls.__sqlmodel_relationships__ or cls.__pydantic_post_init__
            or cls.model_config.get("extra") == "allow" or cls.__pydantic_root_model__
            or any(name not in manager or manager[name].impl.dispatch.set for name in cls.model_fields)):
        plan = None
    _PLANS[cls] = plan
    return plan


class Table(SQLModel):
    """A table model (declare `class X(Table, table=True)`): constructed as SQLModel constructs it, faster."""

    def __init__(__pydantic_self__, **data: Any) -> None:
        if not finish_init.get():
            return  # model_validate's partial construction: SQLAlchemy's state only, as SQLModel does
        self = __pydantic_self__
        plan = _plan(type(self))
        if plan is None:
            sqlmodel_init(self=self, data=data)
            return
        values: dict[str, Any] = {}  # the fields given first, then the defaults, as SQLModel orders them
        defaults: dict[str, Any] = {}
        for name, alias, field in plan:
            if alias is not None and alias in data:
                values[name] = data[alias]
            elif name in data:
                values[name] = data[name]
            elif not field.is_required():
                defaults[name] = field.get_default(call_default_factory=True)
        given = set(values)
        values.update(defaults)
        state = instance_state(self)
        # What one attribute event per field leaves on a transient object: each key "set" from NO_VALUE.
        committed = state.committed_state
        for name in values:
            committed.setdefault(name, NO_VALUE)
        state.modified = True
        self.__dict__.update(values)
        object.__setattr__(self, "__pydantic_fields_set__", given)
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)
