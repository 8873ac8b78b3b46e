"""A reply's cost in SQL statements (a count is deterministic; a time is not): the claim is the reply's only read
before it is processed (one UPDATE ... RETURNING), and the processing transaction's first write returns the reply
it acts on, so the inbound row is never read again after its webhook stored it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlmodel import Session, select

from service.models import Decision, InboundMessage, Lead
from tests.helpers import CALLER, sent_templates, sms_params
from tests.test_conversation import missed

# The webhook's, the claim's, the processing's and the follow-up's send (its claim, the opt-out re-read under the
# number's lock and the outcome): before the claim returned the reply there were two more, and three more reads.
TRANSACTIONS = 6


@contextmanager
def statements(ctx: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(" ".join(sql.split()))

    event.listen(ctx.engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(ctx.engine, "before_cursor_execute", statement)


def begins(seen: list[str]) -> int:
    """Transactions, counted on SQLite, where each is a BEGIN statement (PostgreSQL's driver begins implicitly)."""
    return sum(1 for sql in seen if sql.upper().startswith("BEGIN"))


def test_process_reply_reads_inbound_row_only_through_its_claim(client, post, ctx, twilio_api) -> None:
    missed(client, post)
    with statements(ctx) as seen:
        assert post(client, "/twilio/sms", sms_params("purchase")).status_code == 200
    reads = [sql for sql in seen if sql.upper().startswith("SELECT") and "FROM inboundmessage" in sql]
    assert reads == [], "\n".join(reads)
    claims = [sql for sql in seen if sql.startswith("UPDATE inboundmessage") and "RETURNING" in sql]
    assert len(claims) == 2, "\n".join(seen)  # the claim and the processing's hold, each returning the reply
    if ctx.engine.dialect.name == "sqlite":
        assert begins(seen) <= TRANSACTIONS, "\n".join(seen)
    # Not vacuous: the reply was processed once and acted on.
    with Session(ctx.engine) as session:
        [row] = session.exec(select(InboundMessage)).all()
        assert (row.status, row.attempts) == ("processed", 1)
        assert row.processed_at is not None
        [decision] = session.exec(select(Decision)).all()
        assert decision.inbound_id == row.id
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        assert lead.loan_type == "purchase"
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "ask_timeline"]
