"""The brokers in force, as the database holds them: rows synced from the brokers file, and the generation
that says which version of the file every process must hold (table `brokergeneration`, one row per applied
version: its number, the file's SHA-256, when and by whom).

`apply_brokers` is the one writer: in one transaction it inserts the next generation (its primary key is the
compare-and-set: of two processes applying at once, one commits and the other learns it lost) and upserts the
Broker rows (brokers no longer in the file are deactivated, never deleted: their leads keep their broker).
`latest_generation` is the one small SELECT each process makes per poll; `active_brokers` the rows a process
rebuilds its in-memory set from, so every process ends with the same set whatever file it could read.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.brokers import BrokerConfig
from service.db import read_session, session_scope
from service.models import Broker, BrokerGeneration
from service.sending.opt_out_policy import brokerage_key

# Row fields that are the database's own, never compared with the file.
_NOT_FROM_FILE = {"id", "active", "brokerage_key", "busy_until"}


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes (OSError when it cannot be read)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def applied_by(source: str) -> str:
    """Who applied a generation: the source ("brokers reload", "file watch", "start-up"), host and process."""
    return f"{source} on {socket.gethostname()} pid {os.getpid()}"[:200]


@dataclass
class BrokerChanges:
    """What applying a file changes: brokers added, removed (deactivated) and changed (with the fields)."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (name, twilio_number)
    removed: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (name, number, fields)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """One line per broker, e.g. `~ changed Dana Whitfield (+14155550100): alert_to, hours`."""
        return ([f"+ added {name} ({number})" for name, number in self.added]
                + [f"- removed {name} ({number})" for name, number in self.removed]
                + [f"~ changed {name} ({number}): {', '.join(fields)}" for name, number, fields in self.changed])


@dataclass(frozen=True)
class Applied:
    """The outcome of `apply_brokers`: the generation now in force, and whether this call wrote it."""

    generation: int
    changes: BrokerChanges
    written: bool  # False: nothing to change (same file, same rows), or another process applied first
    lost_race: bool = False  # the expected generation was no longer the latest: nothing was written


def changes_between(rows: list[Broker], configs: list[BrokerConfig]) -> BrokerChanges:
    """Compare the stored rows (active or not) with the file's brokers, by Twilio number."""
    by_number = {row.twilio_number: row for row in rows}
    changes = BrokerChanges()
    wanted = {config.twilio_number for config in configs}
    for config in configs:
        row = by_number.get(config.twilio_number)
        if row is None or not row.active:
            changes.added.append((config.name, config.twilio_number))
            continue
        values = config.model_dump(mode="json")
        differ = sorted(key for key, value in values.items()
                        if key not in _NOT_FROM_FILE and getattr(row, key, None) != value)
        if differ:
            changes.changed.append((config.name, config.twilio_number, differ))
    changes.removed = [(row.name, number) for number, row in sorted(by_number.items())
                       if row.active and number not in wanted]
    return changes


def _sync_rows(session: Session, configs: list[BrokerConfig]) -> None:
    """Upsert the file's brokers; those no longer in it are deactivated. Every row's `brokerage_key` (the
    opt-out scope's brokerage, computed in Python once) is filled or refreshed."""
    existing = {b.twilio_number: b for b in session.exec(select(Broker)).all()}
    wanted = {c.twilio_number for c in configs}
    for config in configs:
        values = config.model_dump(mode="json")
        broker = existing.get(config.twilio_number)
        if broker is None:
            broker = Broker(**values)
            session.add(broker)
        else:
            for key, value in values.items():
                setattr(broker, key, value)
            broker.active = True
        broker.brokerage_key = brokerage_key(broker)
    for number, broker in existing.items():
        if number not in wanted:
            broker.active = False
            broker.brokerage_key = brokerage_key(broker)  # a row from before the column, too
    session.flush()


def latest_generation(engine: Engine) -> BrokerGeneration | None:
    """The generation in force (None before any was recorded): one indexed SELECT, made once per poll (on
    SQLite a snapshot read: it never queues for the write lock)."""
    with read_session(engine) as session:
        latest = _latest(session)
        if latest is not None:
            session.expunge(latest)
        return latest


def _latest(session: Session) -> BrokerGeneration | None:
    return session.exec(
        select(BrokerGeneration).order_by(col(BrokerGeneration.generation).desc()).limit(1)
    ).first()


def active_brokers(engine: Engine) -> dict[str, Broker]:
    """The active brokers as detached rows, by Twilio number: what a process holds in memory."""
    with Session(engine, expire_on_commit=False) as session:
        # In the order they were first written (the brokers file's): what start-up findings list them in.
        rows = session.exec(select(Broker).where(Broker.active == True).order_by(col(Broker.id))).all()  # noqa: E712
        for row in rows:
            session.expunge(row)
    return {b.twilio_number: b for b in rows}


def sync_brokers(engine: Engine, configs: list[BrokerConfig]) -> dict[str, Broker]:
    """Upsert the brokers file into the database (no generation recorded); the active rows after it."""
    with session_scope(engine) as session:
        _sync_rows(session, configs)
    return active_brokers(engine)


def apply_brokers(engine: Engine, configs: list[BrokerConfig], sha256: str, *, by: str,
                  expect: int | None = None) -> Applied:
    """Make `configs` the brokers in force, in one transaction: the next generation and the rows.

    Nothing is written when the latest generation already records this file (`sha256`) and the rows already
    match it. With `expect` (the generation the caller holds), nothing is written unless that
    is still the latest: `lost_race` then says another process applied something first. Two processes that
    both read generation N and write N+1 are refused by the primary key: one of them gets `lost_race`."""
    try:
        with session_scope(engine) as session:
            latest = _latest(session)
            number = latest.generation if latest is not None else 0
            if expect is not None and number != expect:
                return Applied(number, BrokerChanges(), written=False, lost_race=True)
            rows = list(session.exec(select(Broker)).all())
            changes = changes_between(rows, configs)
            # A row whose opt-out brokerage key is missing or computed by older code is refreshed too.
            stale = any(row.brokerage_key != brokerage_key(row) for row in rows)
            if latest is not None and latest.sha256 == sha256 and not changes and not stale:
                return Applied(number, changes, written=False)
            # The generation row first: a second writer of the same number waits here, then fails, before it
            # touches a broker row.
            session.add(BrokerGeneration(generation=number + 1, sha256=sha256, brokers=len(configs), applied_by=by))
            session.flush()
            _sync_rows(session, configs)
    except IntegrityError:
        now = latest_generation(engine)
        return Applied(now.generation if now else 0, BrokerChanges(), written=False, lost_race=True)
    return Applied(number + 1, changes, written=True)
