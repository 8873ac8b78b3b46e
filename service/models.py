"""Tables. Every webhook, text, decision and opt-out is a row; unique constraints make webhooks idempotent.

Size: over 400 lines, because every table is declared here, next to the others, on purpose (one schema to read).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy import inspect as inspect_attributes
from sqlalchemy.orm import object_session
from sqlmodel import Field, SQLModel

from service.table_init import Table

_E = TypeVar("_E", bound=type[StrEnum])
_F = TypeVar("_F", bound=Callable[[], Any])

# Every constraint and index gets a predictable name, so a migration can name the one it changes
# (service/migrations/baseline.py repeats these names as they were at the baseline).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


def _no_arguments(factory: _F) -> _F:
    """A default factory that says it takes no arguments: pydantic asks each factory for its signature on every
    row built, which `inspect` computes afresh (57 us for the builtin `list`, two of them in every Lead)."""
    setattr(factory, "__signature__", inspect.Signature())  # noqa: B010 - a function's own attribute
    return factory


@_no_arguments
def utcnow() -> datetime:
    return datetime.now(UTC)


@_no_arguments
def _empty_list() -> list[Any]:
    return []


@_no_arguments
def _empty_dict() -> dict[str, Any]:
    return {}


def _stored_as_is(enum: _E) -> _E:
    """Each member's name must be its value: psycopg writes a Python enum by *name*, SQLite by value, and the
    database, the API and the audit export must see the same string either way."""
    for member in enum:
        if member.name != member.value:
            msg = f"{enum.__name__}.{member.name} must be named {member.value!r}"
            raise TypeError(msg)
    return enum


@_stored_as_is
class MessageStatus(StrEnum):
    """Where an outbound text is: waiting (pending, possibly deferred), being sent, or settled."""

    pending = "pending"
    sending = "sending"
    sent = "sent"
    dry_run = "dry_run"
    failed = "failed"
    blocked = "blocked"
    suppressed = "suppressed"


@_stored_as_is
class Purpose(StrEnum):
    """Why a text is sent (what the borrower is told, or an alert to the broker's team)."""

    opener = "opener"
    question = "question"
    ack = "ack"
    ready = "ready"
    closing = "closing"
    help = "help"
    optout_confirm = "optout_confirm"
    optin_confirm = "optin_confirm"
    alert = "alert"
    human = "human"  # a person's own text from the console or the API (author on the row)
    sign_in = "sign_in"  # a one-time sign-in code to a user of the console


@_stored_as_is
class Audience(StrEnum):
    """Who reads a text: a borrower (guarded and gated) or the broker's team."""

    borrower = "borrower"
    broker = "broker"


@_stored_as_is
class LeadState(StrEnum):
    """A lead's place in the conversation (service.conversation is the only writer)."""

    new = "new"
    opened = "opened"
    asking = "asking"
    handoff = "handoff"
    ready = "ready"
    closed = "closed"


# Purposes that count toward the per-lead cap on automated texts.
AUTOMATED = frozenset({Purpose.opener, Purpose.question, Purpose.ack, Purpose.ready, Purpose.closing})
# Purposes allowed to an opted-out number (the one confirmation of the opt-out itself).
ALLOWED_AFTER_OPTOUT = frozenset({Purpose.optout_confirm})


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            msg = "naive datetime stored; use timezone-aware UTC"
            raise ValueError(msg)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Broker(Table, table=True):
    """A broker as loaded from the brokers file at start-up (upserted by Twilio number)."""

    id: int | None = Field(default=None, primary_key=True)
    twilio_number: str = Field(unique=True, index=True)
    name: str
    brokerage: str
    nmls_id: str
    company_nmls_id: str | None = None
    # Which brokerage it is in for the opt-out scope: service.sending.opt_out_policy.brokerage_key ("nmls:<id>" or
    # "name:<folded name>"), computed in Python and stored by sync_brokers, compared as is by the one SQL statement
    # (service.optout_lock). NULL on a row no sync has filled: that broker is then a brokerage of its own.
    brokerage_key: str | None = None
    forward_to: str
    timezone: str
    booking_url: str | None = None
    alert_to: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    ring_seconds: int = 18
    mode: str = "forwarding"
    call_screening: bool = True
    do_not_text: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    active: bool = True
    transcribe_voicemail: bool | None = False
    # The console's users besides forward_to and alert_to: [{name, phone, role: member | admin}].
    team: list[dict[str, Any]] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=True))
    # Working hours in the broker's time zone ({"mon": "09:00-17:30", ..., "holidays": ["2026-12-25"]}), or None.
    hours: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    handoff_sla_minutes: int | None = 15
    backup_alert_to: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=True))
    # Outgoing webhooks to the broker's CRM: [{url, secret, events: [...]}].
    webhooks: list[dict[str, Any]] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=True))
    # "With a client until HH:MM", set from the console (never from the brokers file, so a restart keeps it).
    busy_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class BrokerGeneration(Table, table=True):
    """One applied version of the brokers file (service.broker_set): every process holds the brokers of the
    latest generation. The primary key is the compare-and-set: two processes applying one edit insert the same
    generation number and only one commits."""

    generation: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sha256: str  # of the file's bytes as applied
    brokers: int  # active brokers in this generation
    applied_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    applied_by: str  # "brokers reload", "file watch" or "start-up", with host and process id


class Lead(Table, table=True):
    """One caller for one broker, with the conversation's state and what has been captured."""

    __table_args__ = (UniqueConstraint("broker_id", "phone", name="uq_lead_broker_phone"),)

    id: int | None = Field(default=None, primary_key=True)
    broker_id: int = Field(foreign_key="broker.id", index=True)
    phone: str = Field(index=True)
    state: str = LeadState.new
    loan_type: str | None = None
    timeline: str | None = None
    applied_elsewhere: bool | None = None
    callback_window: str | None = None
    handoff_reasons: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    last_question: str | None = None
    asked: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    closed_reason: str | None = None
    opener_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    automated_count: int = 0
    summary_alert_sent: bool = False
    not_textable_reason: str | None = None
    # When a person took up the current handoff (set by whatever they work it in, e.g. the console). Until then
    # every text on a handoff or ready lead is forwarded to the broker; after, only texts with a new reason.
    handoff_worked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # Forwarding rate limit (service.forwarding): the earliest time the next text may be forwarded at once, and
    # how many texts the pending follow-up alert stands for.
    forward_next_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    forward_pending: int | None = None
    # The last alert about this lead that did not reach the broker's team, and what was done about it (resent
    # from another number, retried, escalated). For the console that will list leads; AlertFailure has each one.
    alert_failed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    alert_error: str | None = None
    # The console's view of the lead (service.leads_view): who the caller is, when things happened. The time of
    # the last message is read from the messages: a webhook never writes the lead row (it holds a key-share lock
    # on it from the message's foreign key, and an update there deadlocks with the reply processing's lock).
    name: str | None = None
    missed_call_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    handoff_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # A person took the lead over (their text, a bridged call, an outcome): the bot says nothing more.
    human_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    human_by: str | None = None
    outcome: str | None = None
    outcome_note: str | None = Field(default=None, sa_column=Column(Text))
    outcome_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    outcome_by: str | None = None
    # Unworked-handoff reminders sent for the current handoff (service.handoff_sla).
    sla_alerts: int | None = 0
    # The language the borrower writes in (service.replies.language): "en" or "es". Borrower texts are rendered
    # in it (service.templates); a database from before this column reads NULL, which is English.
    language: str | None = "en"
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


@event.listens_for(Lead, "before_update")
def _touch_lead(_mapper: object, _connection: object, lead: Lead) -> None:
    """Every change to a lead moves its `updated_at` (an opt-out closing it, a handoff, an outcome), so a CRM
    syncing by it, the API's list and the console see the change. A flush that changes nothing leaves it."""
    session = object_session(lead)
    if session is None or not session.is_modified(lead, include_collections=False):
        return
    if not inspect_attributes(lead).attrs.updated_at.history.has_changes():
        lead.updated_at = utcnow()


class OptOut(Table, table=True):
    """Current opt-out status of a number for a broker. Kept for good, even when data is purged."""

    __table_args__ = (UniqueConstraint("broker_id", "phone", name="uq_optout_broker_phone"),)

    id: int | None = Field(default=None, primary_key=True)
    broker_id: int = Field(foreign_key="broker.id", index=True)
    phone: str = Field(index=True)
    opted_out: bool = True
    source: str  # keyword:STOP | twilio:STOP | plain_words | llm | error:21610 | api
    confirmation_sent: bool = False
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # When the borrower last said an opt-out or opt-in word to this broker (a carrier block is not one): within
    # the opt-out scope the latest word wins (service.optout_lock.opt_out_state). A row from before this column
    # reads NULL, and its updated_at stands in.
    said_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # A carrier's block of this broker's number for this borrower (Twilio error 21610; source "error:21610") and
    # when it was last reported, kept apart from the borrower's words: set on every carrier opt-out, even of a row
    # already opted out by a STOP, and cleared only by an opt-in word to this same broker. While set, this broker
    # may not text the number whatever the latest word in the scope says (service.optout_lock.opt_out_state).
    carrier_block: str | None = None
    carrier_blocked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class OptOutEvent(Table, table=True):
    """Every opt-out and opt-in, with its source: the compliance history."""

    id: int | None = Field(default=None, primary_key=True)
    broker_id: int = Field(foreign_key="broker.id", index=True)
    phone: str = Field(index=True)
    action: str  # opt_out | opt_in
    source: str
    message_sid: str | None = None
    # The opt-out scope in force when it was recorded (broker | brokerage | all, policies/sending/opt_out.yaml);
    # a row from before this column reads NULL, which was broker scope.
    scope: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class CallEvent(Table, table=True):
    """One voice webhook delivery. Unique per (call, kind, status) so Twilio retries are no-ops."""

    __table_args__ = (
        UniqueConstraint("call_sid", "kind", "status", name="uq_callevent"),
        # The report counts a window's calls by kind and missed from this index alone (covering: 3x faster
        # than reading the rows on SQLite, benchmarks/bench_report.py).
        Index("ix_callevent_report", "broker_id", "created_at", "kind", "missed"),
    )

    id: int | None = Field(default=None, primary_key=True)
    call_sid: str = Field(index=True)
    kind: str  # voice | dial-status | status | screen-accept | voicemail
    status: str = ""
    broker_id: int | None = Field(default=None, foreign_key="broker.id")
    caller: str | None = None
    missed: bool | None = None
    reason: str | None = None  # why it counts as missed / why no opener
    duration: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class InboundMessage(Table, table=True):
    """An inbound SMS, stored before anything else happens."""

    # The worker's sweep for replies not yet processed, /ready and /metrics read the oldest by status: covered.
    __table_args__ = (Index("ix_inboundmessage_status_received", "status", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)
    message_sid: str = Field(unique=True, index=True)
    broker_id: int = Field(foreign_key="broker.id", index=True)
    lead_id: int | None = Field(default=None, foreign_key="lead.id", index=True)
    from_phone: str = Field(index=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    opt_out_type: str | None = None
    num_media: int = 0
    status: str = "received"  # received | processing | processed | failed
    attempts: int = 0
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    processed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class OutboundMessage(Table, table=True):
    """A text we intend to send: persisted first, then claimed and sent by exactly one worker."""

    # The queue-time gates count recent texts (service.sending.gates.count_columns): the circuit breaker's openers
    # in the window across brokers, and a broker's texts in the last day, each a range read of one index holding
    # every column the count tests, stopped at the limit it is compared with, so the counts stay flat as the
    # table grows.
    __table_args__ = (
        Index("ix_outboundmessage_purpose_counts", "purpose", "created_at", "audience", "status"),
        Index("ix_outboundmessage_broker_counts", "broker_id", "created_at", "purpose", "audience", "status",
              "to_phone"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str | None = Field(default=None, unique=True)
    broker_id: int = Field(foreign_key="broker.id", index=True)
    lead_id: int | None = Field(default=None, foreign_key="lead.id", index=True)
    audience: str = Audience.borrower
    purpose: str  # a Purpose
    template_id: str
    # The language the template was rendered in ("en", "es"); NULL on rows from before the column (English).
    language: str | None = None
    policy_version: str | None = None
    guard_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    to_phone: str = Field(index=True)
    from_phone: str
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=MessageStatus.pending, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True)
    )
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    last_error: str | None = None
    unknown_outcome: bool = False
    twilio_sid: str | None = Field(default=None, index=True)
    delivery_status: str | None = None
    error_code: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    retry_of: int | None = Field(default=None, index=True)  # an alert sent again: the id of the first one
    # A person's own text: the user's phone and name; guard_override when they confirmed past a guard warning.
    author: str | None = None
    author_name: str | None = None
    guard_override: bool | None = None
    # Every gate verdict on a borrower text, in order, with the reason a person reads (service.sending.verdicts):
    # [{at, stage: queue | send, verdict: allow | defer | suppress | block, cause, reason, until, policy_version}].
    # Written in the INSERT that queues the text and the UPDATE that settles an attempt: no statement of its own.
    # None on rows from before the column (the audit export says "not recorded").
    verdicts: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class AlertFailure(Table, table=True):
    """An alert to the broker's team (or an escalation) that did not get through, and what was done about it.

    Holds no borrower text and no borrower number (the lead id links to them), so it outlives a `privacy forget`
    as an operational record; no foreign keys for the same reason."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(index=True)
    root_id: int
    broker_id: int | None = None
    lead_id: int | None = Field(default=None, index=True)
    template_id: str
    to_phone: str
    from_phone: str
    error_code: int | None = None
    error: str
    action: str  # resent from +1... | retry | escalated | not escalated: ...
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Decision(Table, table=True):
    """What the service decided about one inbound message, and on what grounds (the audit trail)."""

    id: int | None = Field(default=None, primary_key=True)
    inbound_id: int = Field(foreign_key="inboundmessage.id", index=True)
    lead_id: int | None = Field(default=None, foreign_key="lead.id")
    action: str
    source: str = "rules"
    rules_fired: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    rules_version: str | None = None
    llm_prompt: str | None = None
    llm_prompt_version: str | None = None
    llm_model: str | None = None
    llm_error: str | None = None
    llm_skipped: str | None = None  # why the LLM was not consulted although the rules asked for it
    language: str | None = None  # the lead's language after this reply ("en", "es"; service.replies.language)
    analysis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DeliveryEvent(Table, table=True):
    """Each status callback for an outbound message (idempotent per sid and status)."""

    __table_args__ = (UniqueConstraint("message_sid", "status", name="uq_delivery_event"),)

    id: int | None = Field(default=None, primary_key=True)
    message_sid: str = Field(index=True)
    status: str
    error_code: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DoNotText(Table, table=True):
    """Known contacts never to text automatically (staff, existing clients, partners). broker_id None = all."""

    __table_args__ = (UniqueConstraint("phone", "broker_id", name="uq_dnt_phone_broker"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(index=True)
    broker_id: int | None = Field(default=None, foreign_key="broker.id")
    note: str | None = None
    source: str = "api"  # file | api | brokers_file
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class LineTypeCache(Table, table=True):
    """Twilio Lookup v2 line type per number, cached so each number is looked up at most once a month."""

    phone: str = Field(primary_key=True)
    line_type: str | None = None
    checked_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ForgottenSid(Table, table=True):
    """The SHA-256 of a MessageSid or CallSid whose rows were deleted (privacy forget, retention purge).

    Replay protection outlives the data: a captured, validly signed webhook replayed after its rows are gone
    (a START that would opt the number back in, a missed call that would text it) is refused. A Twilio SID is
    128 random bits, so its hash cannot be reversed or tied to a number by anyone who does not hold the SID."""

    digest: str = Field(primary_key=True)
    kind: str  # message | call
    forgotten_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class PrivacyAction(Table, table=True):
    """One privacy purge or forget request, recorded to prove what was deleted, what was kept and why.

    Holds no borrower number or words: a forget request stores the number's SHA-256 (`phone_hash`, see
    service.retention.phone_hash), which lets someone who has the number find the request, not the reverse for
    anyone who does not (a 10-digit number can be guessed by brute force, so it is a lookup key, not
    anonymisation). `action`: purge | purge-forced | retention | forget | forget-forced. `deleted` and `kept`
    are counts per kind of row; `keep_until` is when the kept communications end their retention period."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))
    action: str = Field(index=True)
    actor: str | None = None  # the operating-system user who ran the command, when known; "textback" for the worker
    reason: str | None = Field(default=None, sa_column=Column(Text))  # given with --force (or --reason)
    period: str  # "25 months (policy)" | "30 days"
    cutoff: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    phone_hash: str | None = Field(default=None, index=True)
    broker_id: int | None = None
    deleted: dict[str, int] = Field(default_factory=_empty_dict, sa_column=Column(JSON, nullable=False))
    kept: dict[str, int] = Field(default_factory=_empty_dict, sa_column=Column(JSON, nullable=False))
    keep_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    kept_because: str | None = Field(default=None, sa_column=Column(Text))
    policy_version: str | None = None  # service.policy.files.policy_version of the policies in force


class LeadEvent(Table, table=True):
    """One thing that happened to a lead, in order: the lead's history for the console, the API, the CRM
    webhooks and the sufficiency report. `actor` is "textback", "borrower", or a user's phone."""

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(index=True)
    broker_id: int = Field(index=True)
    kind: str = Field(index=True)  # an EventKind
    actor: str = "textback"
    actor_name: str | None = None
    data: dict[str, Any] = Field(default_factory=_empty_dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))


class LoginCode(Table, table=True):
    """A one-time sign-in code texted to a user's phone (only its hash is stored)."""

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(index=True)
    code_hash: str
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class AuthAttempt(Table, table=True):
    """One sign-in request or code attempt, counted for rate limits per phone and per client address."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # "code:phone:+1...", "code:ip:203.0.113.9", "session:ip:..."
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))


class UserSession(Table, table=True):
    """A signed-in browser: the cookie holds a random token, the database its hash (revocable)."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True)
    phone: str = Field(index=True)
    csrf_token: str
    lead_id: int | None = None  # a session opened from an alert link sees that lead only
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_seen_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    user_agent: str | None = None


class LeadLink(Table, table=True):
    """The short link in an alert SMS (/l/<token>): single use, expiring, for one phone and one lead."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True)
    lead_id: int = Field(index=True)
    phone: str
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class ApiToken(Table, table=True):
    """A bearer token for a CRM (`textback tokens create`): one broker, stored hashed, revocable."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True)
    broker_id: int = Field(index=True)
    name: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class HumanCall(Table, table=True):
    """A click-to-call: Twilio rings the user, then bridges to the borrower from the broker's number."""

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(index=True)
    broker_id: int
    user_phone: str
    user_name: str | None = None
    call_sid: str | None = Field(default=None, unique=True, index=True)
    status: str = "requested"  # requested | ringing-user | bridging | completed | failed | no-answer | ...
    bridged: bool = False
    duration: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class WebhookDelivery(Table, table=True):
    """One event for one broker's CRM webhook: persisted, signed at send time, retried with backoff."""

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(unique=True, index=True)
    broker_id: int = Field(index=True)
    lead_id: int | None = Field(default=None, index=True)
    url: str
    event: str
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", index=True)  # pending | sending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True)
    )
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    response_status: int | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class LeadCase(Table, table=True):
    """One missed-call lead for the sufficiency report (service.cases): the missed call that started it and what
    came of it, kept up to date by the lead's events, so the report reads one row per case.

    A case starts with a missed call from a caller with no open case; a call from them within CASE_WINDOW of
    their last call is the same case (before any human contact it is a repeat call, the sign that a text was not
    enough; after contact it is not counted). The opener's sent/delivered/failed state is its message's."""

    __table_args__ = (Index("ix_leadcase_broker_missed", "broker_id", "missed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    broker_id: int = Field(index=True)
    lead_id: int | None = Field(default=None, index=True)  # None once the lead was forgotten or purged
    call_sid: str | None = None
    missed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_call_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    hour_of_week: int  # of the missed call in the broker's time zone: 0 = Monday 00:00-01:00 ... 167
    in_hours: bool | None = None  # during the broker's working hours (None: the broker has none set)
    opener_message_id: int | None = None
    opener_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    first_reply_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    fields: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    handoff_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    handoff_reasons: list[str] = Field(default_factory=_empty_list, sa_column=Column(JSON, nullable=False))
    human_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    human_by: str | None = None
    human_how: str | None = None  # text | call | answered_call | an outcome
    repeat_calls: int = 0  # calls (answered or missed) after the first and before any human contact
    first_repeat_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    calls_after_contact: int = 0
    outcome: str | None = None
    outcome_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    opted_out_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class OpenerTally(Table, table=True):
    """Borrower openers stored per minute (since the epoch, UTC), in a few shards per minute: kept by a database
    trigger on outboundmessage and read by the circuit breaker as an upper bound (service.opener_tally)."""

    minute: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    shard: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    n: int = Field(default=0, sa_column=Column(Integer, nullable=False))
