"""Run in a spawned process by test_optout_races.py: one side of the number lock, held until told to let go.

A module of its own so the child imports only what it needs (not the test module and the app)."""

from __future__ import annotations

from typing import Any


def hold_for_send_in_child(url: str, broker_id: int, phone: str, held: Any, release: Any, seen: Any) -> None:
    """In a separate process: hold the number's send lock until told to let go."""
    from service import optout_lock
    from service.db import make_engine

    engine = make_engine(url)
    with optout_lock.hold_for_send(engine, broker_id, phone, wait=10) as opted_out:
        seen.value = int(opted_out)
        held.set()
        release.wait(20)
    engine.dispose()


def change_in_child(url: str, broker_id: int, phone: str, held: Any, release: Any, seen: Any) -> None:
    """In a separate process: opt the number out in a transaction left open until told to commit."""
    from service.db import make_engine, session_scope
    from service.store import set_opt_out

    engine = make_engine(url)
    with session_scope(engine) as session:
        set_opt_out(session, broker_id=broker_id, phone=phone, opted_out=True, source="test")
        held.set()
        release.wait(20)
    seen.value = 1
    engine.dispose()
