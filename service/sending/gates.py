"""The one answer to "may this text go now?", at queue time and at send time, as a typed Verdict.

Queue time (`at_queue`, borrower texts only), cheapest first: opt-out (in the scope of
policies/sending/opt_out.yaml, one statement) -> known contact (do-not-text) ->
number known not to take texts -> (automated texts only) circuit breaker -> caps (per lead total, per lead per
day, per broker per day; their four counts in one statement) -> quiet hours (defer, not drop). The output guard runs after these (it is the most
expensive; `guarded` turns its result into a Verdict). Send time (`at_send`): the opt-out read afresh, quiet
hours again for a text that waited, and the line type (Twilio Lookup) for an opener, which needs the network.

Callers act on `Verdict.kind` and `Verdict.cause`, never on the wording: `Verdict.last_error` is what the
row records for the audit export and the operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, ColumnElement, Integer, Select, and_, bindparam, case, func, literal
from sqlmodel import Session, col, select

from service import opener_tally
from service.models import (
    ALLOWED_AFTER_OPTOUT,
    AUTOMATED,
    Audience,
    Broker,
    Lead,
    LineTypeCache,
    MessageStatus,
    OpenerTally,
    OutboundMessage,
    Purpose,
)
from service.optout_lock import OptOutState, describe
from service.store import is_known_contact, opt_out_state, saved_id

if TYPE_CHECKING:
    from service.context import AppContext

NOT_TEXTABLE_LINE_TYPES = {"landline", "pager", "tollFree"}
COUNTED = (MessageStatus.pending, MessageStatus.sending, MessageStatus.sent, MessageStatus.dry_run)


class Kind(StrEnum):
    allow = "allow"
    defer = "defer"  # wait until `until`, then ask again
    suppress = "suppress"  # never sent: a gate says no
    block = "block"  # never sent: the output guard says no


class Cause(StrEnum):
    """Which gate decided (what callers branch on)."""

    opted_out = "opted_out"
    known_contact = "known_contact"
    not_textable = "not_textable"
    circuit_breaker = "circuit_breaker"
    cap = "cap"
    quiet_hours = "quiet_hours"
    output_guard = "output_guard"
    line_type = "line_type"
    lock_busy = "lock_busy"


@dataclass(frozen=True)
class Verdict:
    """What the gates decided, why (`cause`, for code; `reason`, for people) and, for a deferral, until when."""

    kind: Kind = Kind.allow
    cause: Cause | None = None
    reason: str | None = None
    until: datetime | None = None
    detail: str | None = None  # the line type a Lookup found, for the lead's not_textable_reason

    @classmethod
    def defer(cls, cause: Cause, reason: str, until: datetime) -> Verdict:
        return cls(Kind.defer, cause, reason, until)

    @classmethod
    def suppress(cls, cause: Cause, reason: str, detail: str | None = None) -> Verdict:
        return cls(Kind.suppress, cause, reason, detail=detail)

    @classmethod
    def block(cls, cause: Cause, reason: str) -> Verdict:
        return cls(Kind.block, cause, reason)

    @property
    def last_error(self) -> str | None:
        """What the row records (the audit export and the operators read it; no code does)."""
        return f"deferred: {self.reason}" if self.kind is Kind.defer else self.reason


ALLOW = Verdict()


@dataclass(frozen=True)
class QueueCounts:
    """What the circuit breaker and the caps count, read in one statement (`count_columns`), each counted up to the
    limit it is compared with (so a count at its limit means that many or more)."""

    openers: int = 0  # borrower openers in the breaker window, across all brokers
    opener_numbers: int = 0  # this broker's openers to different numbers in the breaker window
    lead_today: int = 0  # this lead's borrower texts in the last day
    broker_today: int = 0  # this broker's automated borrower texts in the last day


@dataclass(frozen=True)
class QueueFacts:
    """What the queue-time gates read from the database, read already (service.new_caller folds it into its one
    read): the opt-out is not in force, so only the known-contact answer and the counts remain."""

    known_contact: bool
    counts: QueueCounts


def _counted(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(col(OutboundMessage.audience) == Audience.borrower, col(OutboundMessage.status).in_(COUNTED),
                *conditions)


@cache
def count_columns(*, opener: bool, lead: bool, tally: bool = False) -> tuple[Any, ...]:
    """The breaker's and the caps' counts as labelled scalar subqueries (the names of QueueCounts), for one
    SELECT: the breaker's only for an opener, the lead's only for a lead.

    Each reads a range of an index bounded by time (or the one lead's rows) that holds every column it tests (on
    SQLite no row is fetched; PostgreSQL still checks the table for rows too recent to be marked all-visible),
    and stops at its limit (`count_params`: the cap or threshold it is compared with), so a count costs about
    that many entries however many texts the window holds: the gates only ask whether a limit is reached. (The
    distinct numbers are the exception on PostgreSQL, which reads the broker's window to de-duplicate before the
    limit: one broker's openers, not the platform's.) Built once (their Python construction cost more than the
    database's answer)."""
    broker_id: BindParameter[int] = bindparam("count_broker_id")
    lead_id: BindParameter[int] = bindparam("count_lead_id")
    since: BindParameter[datetime] = bindparam("count_since")
    day_ago: BindParameter[datetime] = bindparam("count_day_ago")
    zero = literal(0)
    columns: list[Any] = []
    if opener:
        exact = _bounded(select(literal(1)).where(_counted(
            col(OutboundMessage.purpose) == Purpose.opener, col(OutboundMessage.created_at) >= since,
        )), "count_openers_limit")
        if tally:
            # The openers tally's upper bound (service.opener_tally), a few rows: below the limit it settles the
            # breaker as the exact count would; at or above it, the exact count decides (and is what is shown).
            bound = select(func.coalesce(func.sum(OpenerTally.n), 0)).where(
                col(OpenerTally.minute) >= bindparam("count_since_minute", type_=Integer)).scalar_subquery()
            limit = bindparam("count_openers_limit", type_=Integer)
            columns.append(case((bound < limit, bound), else_=exact).label("openers"))
        else:
            columns.append(exact.label("openers"))
        columns.append(_bounded(select(OutboundMessage.to_phone).distinct().where(
            col(OutboundMessage.broker_id) == broker_id, col(OutboundMessage.purpose) == Purpose.opener,
            col(OutboundMessage.status).in_(COUNTED), col(OutboundMessage.created_at) >= since,
        ), "count_numbers_limit").label("opener_numbers"))
    else:
        columns += [zero.label("openers"), zero.label("opener_numbers")]
    if not lead:
        columns.append(zero.label("lead_today"))
    else:
        columns.append(_bounded(select(literal(1)).where(_counted(
            col(OutboundMessage.lead_id) == lead_id, col(OutboundMessage.created_at) >= day_ago,
        )), "count_lead_limit").label("lead_today"))
    # The broker's daily volume of automated texts: a person's own texts are not automated and never use it up.
    columns.append(_bounded(select(literal(1)).where(_counted(
        col(OutboundMessage.broker_id) == broker_id, col(OutboundMessage.created_at) >= day_ago,
        col(OutboundMessage.purpose) != Purpose.human,
    )), "count_broker_limit").label("broker_today"))
    return tuple(columns)


def _bounded(rows: Select[Any], limit: str) -> Any:
    """How many rows `rows` yields, counting no further than the bound parameter `limit`."""
    return select(func.count()).select_from(rows.limit(bindparam(limit, type_=Integer)).subquery()).scalar_subquery()


def count_params(ctx: AppContext, *, broker_id: int, lead_id: int | None, now: datetime) -> dict[str, Any]:
    """The values `count_columns` is bound with: the broker, the lead, the windows ending `now`, and each count's
    limit (the cap or threshold it is compared with: a count that reaches it reads no further)."""
    caps = ctx.sending_policy.caps
    since = now - timedelta(minutes=caps.breaker_window_minutes)
    return {"count_broker_id": broker_id, "count_lead_id": lead_id,
            "count_since": since, "count_since_minute": opener_tally.minute_of(since),
            "count_day_ago": now - timedelta(days=1),
            "count_openers_limit": caps.breaker_max_openers,
            "count_numbers_limit": caps.breaker_max_openers_per_broker,
            "count_lead_limit": caps.per_lead_per_day,
            "count_broker_limit": caps.per_broker_per_day}


def counts_of(row: Any) -> QueueCounts:
    """QueueCounts from a result row holding `count_columns` (by their labels)."""
    mapping = row._mapping
    return QueueCounts(int(mapping["openers"]), int(mapping["opener_numbers"]), int(mapping["lead_today"]),
                       int(mapping["broker_today"]))


@cache
def _counts_query(*, opener: bool, lead: bool, tally: bool) -> Select[Any]:
    query: Select[Any] = select(*count_columns(opener=opener, lead=lead, tally=tally))
    return query


def read_counts(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, opener: bool,
                now: datetime) -> QueueCounts:
    """The breaker's and the caps' counts: one statement."""
    lead_id = None if lead is None else lead.id
    params = count_params(ctx, broker_id=saved_id(broker), lead_id=lead_id, now=now)
    query = _counts_query(opener=opener, lead=lead_id is not None, tally=opener and opener_tally.in_use(ctx))
    return counts_of(session.execute(query, params).one())


def breaker_tripped(ctx: AppContext, counts: QueueCounts) -> str | None:
    """Openers in the window, platform-wide and per broker to distinct numbers: too many looks like abuse."""
    caps = ctx.sending_policy.caps
    if counts.openers >= caps.breaker_max_openers:
        return (f"circuit breaker: {counts.openers} or more openers in {caps.breaker_window_minutes} min across all "
                "brokers")
    if counts.opener_numbers >= caps.breaker_max_openers_per_broker:
        return (f"circuit breaker: {counts.opener_numbers} or more openers to different numbers in "
                f"{caps.breaker_window_minutes} min")
    return None


def _cap_reached(ctx: AppContext, lead: Lead | None, counts: QueueCounts) -> str | None:
    caps = ctx.sending_policy.caps
    if lead is not None:
        per_lead_total = ctx.settings.max_automated_texts_per_lead or caps.per_lead_total
        if lead.automated_count >= per_lead_total:
            return "per-lead cap reached"
        if counts.lead_today >= caps.per_lead_per_day:
            return "per-lead daily cap reached"
    if counts.broker_today >= caps.per_broker_per_day:
        return "per-broker daily cap reached"
    return None


def at_queue(  # one early return per gate reads best
    session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, to: str, purpose: str, now: datetime,
    facts: QueueFacts | None = None,
) -> Verdict:
    """Every gate for one borrower-facing text about to be queued, cheapest first. With `facts` (read already,
    the opt-out found not in force) no statement runs."""
    if facts is None and purpose not in ALLOWED_AFTER_OPTOUT:
        state = opt_out_state(session, saved_id(broker), to, ctx.sending_policy.opt_out_scope)
        if state is not None and state.opted_out:
            return Verdict.suppress(Cause.opted_out, describe(state))
    known = (facts.known_contact or to in broker.do_not_text) if facts is not None else (
        is_known_contact(session, broker, to))
    if known:
        return Verdict.suppress(Cause.known_contact, "known contact (do-not-text list)")
    if lead is not None and lead.not_textable_reason:
        return Verdict.suppress(Cause.not_textable, f"not textable: {lead.not_textable_reason}")
    if purpose not in AUTOMATED:
        return allowed(ctx, broker_tz=broker.timezone, to=to, purpose=purpose, now=now)
    counts = facts.counts if facts is not None else read_counts(
        session, ctx, broker=broker, lead=lead, opener=purpose == Purpose.opener, now=now)
    if purpose == Purpose.opener:
        tripped = breaker_tripped(ctx, counts)
        if tripped:
            return Verdict.suppress(Cause.circuit_breaker, tripped)
    capped = _cap_reached(ctx, lead, counts)
    if capped:
        return Verdict.suppress(Cause.cap, capped)
    not_before = quiet_hours_until(ctx, broker=broker, to=to, purpose=purpose, now=now)
    if not_before > now:
        return Verdict.defer(Cause.quiet_hours, ctx.sending_policy.quiet_hours_reason(to, now, broker.timezone),
                             not_before)
    return allowed(ctx, broker_tz=broker.timezone, to=to, purpose=purpose, now=now)


def opener_exempt(ctx: AppContext) -> bool:
    """Whether the opener answering the caller's own call may go outside quiet hours: the setting
    TEXTBACK_OPENER_IS_REPLY_OVERRIDE when set, else the quiet-hours file's `opener_is_reply`."""
    override = ctx.settings.opener_is_reply_override
    return bool(ctx.sending_policy.quiet_hours.opener_is_reply) if override is None else override


def quiet_hours_until(ctx: AppContext, *, broker: Broker, to: str, purpose: str, now: datetime) -> datetime:
    """When the recipient's quiet hours let a text of this purpose go: `now` itself when they do not hold it
    (also what service.next_step reads, so a held text speaks of the moment it will be read)."""
    if purpose not in AUTOMATED:
        return now
    if purpose == Purpose.opener and opener_exempt(ctx):
        return now
    opens: datetime = ctx.sending_policy.next_allowed_send(to, now, broker.timezone, is_opener=False)
    return opens


def guarded(result: Any) -> Verdict:
    """The output guard's result as a verdict (the guard itself runs in service.outbox, after the gates)."""
    if result.allowed:
        return ALLOW
    rules = ", ".join(dict.fromkeys(v.rule for v in result.violations))
    return Verdict.block(Cause.output_guard, f"output guard: {rules}" if rules else "output guard")


def opted_out_before_send(msg: OutboundMessage, state: OptOutState | None = None) -> Verdict:
    """The text waited and the number opted out meanwhile (in the scope `state` names, when known)."""
    why = f"{describe(state).replace('opted out', 'opted out before send', 1)}" if state is not None and (
        state.opted_out) else "opted out before send"
    if msg.unknown_outcome:
        why += " (Twilio had no record of the earlier attempt)"
    return Verdict.suppress(Cause.opted_out, why)


def lock_busy(now: datetime) -> Verdict:
    """The number's opt-out lock was busy: ask again in a second (the attempt does not count)."""
    return Verdict.defer(Cause.lock_busy, "opt-out lock busy", now + timedelta(seconds=1))


def at_send(session: Session, ctx: AppContext, msg: OutboundMessage, now: datetime, *,
            opt_out_checked: bool = False) -> Verdict:
    """The checks on a claimed text just before it goes (after any reconciliation with Twilio).
    `opt_out_checked`: the claim itself found the number not opted out (its WHERE: optout_lock.opted_out_clause),
    so the opt-out is not read again here (the lock's read, or the claim under the lock, still decides)."""
    if msg.audience != Audience.borrower:
        return ALLOW
    if msg.purpose not in ALLOWED_AFTER_OPTOUT and not opt_out_checked:
        state = opt_out_state(session, msg.broker_id, msg.to_phone, ctx.sending_policy.opt_out_scope)
        if state is not None and state.opted_out:
            return opted_out_before_send(msg, state)
    # A borrower text leaves from its broker's own number: the loaded brokers know its timezone (no query).
    known = ctx.broker_for(msg.from_phone)
    broker_tz = known.timezone if known is not None and known.id == msg.broker_id else None
    if msg.purpose in AUTOMATED and not (msg.purpose == Purpose.opener and opener_exempt(ctx)):
        # A retry or a worker back after downtime must not carry a text past the recipient's window (nor an
        # opener, when the quiet-hours exemption for answering the caller's own call is off).
        if broker_tz is None:
            broker = session.get(Broker, msg.broker_id)
            broker_tz = broker.timezone if broker else "UTC"
        opens = ctx.sending_policy.next_allowed_send(msg.to_phone, now, broker_tz, is_opener=False)
        if opens > now:
            why = ctx.sending_policy.quiet_hours_reason(msg.to_phone, now, broker_tz) or "quiet hours"
            return Verdict.defer(Cause.quiet_hours, f"{why} at send time", opens)
    if msg.purpose == Purpose.opener:
        skip = line_type_allows(session, ctx, msg.to_phone, now)
        if skip is not None:
            return Verdict.suppress(Cause.line_type, f"not textable: {skip}", detail=skip)
    return allowed(ctx, broker_tz=broker_tz or "UTC", to=msg.to_phone, purpose=msg.purpose, now=now)


# Why a borrower text that is not automated may go whatever the hour (quiet hours and caps are for automated
# texts): what the audit trail says of it.
NOT_AUTOMATED_REASONS: dict[str, str] = {
    Purpose.optout_confirm: "opt-out confirmation, allowed after an opt-out",
    Purpose.optin_confirm: "opt-in confirmation, answering the borrower's own START",
    Purpose.help: "answers the borrower's own HELP",
    Purpose.human: "a person's own text",
}


def allowed(ctx: AppContext, *, broker_tz: str, to: str, purpose: str, now: datetime) -> Verdict:
    """An allow verdict with the reason a person reads in the audit trail (no query: pure policy)."""
    if purpose not in AUTOMATED:
        reason = NOT_AUTOMATED_REASONS.get(purpose, f"not an automated text ({purpose})")
        return Verdict(Kind.allow, reason=reason)
    try:
        hours = ctx.sending_policy.calling_hours(to, now, broker_tz)
    except ValueError as exc:  # no window within two weeks: the gates decided already; the words must not fail
        return Verdict(Kind.allow, reason=f"allowed ({purpose}); calling hours not worked out: {exc}")
    if hours.inside:
        return Verdict(Kind.allow, reason=f"within the recipient's calling hours ({hours.span}, {hours.place})")
    # Outside the window yet allowed: only the opener answering the caller's own call may be (quiet_hours_until).
    if purpose != Purpose.opener or not opener_exempt(ctx):
        return Verdict(Kind.allow, reason=(
            f"outside the recipient's calling hours ({hours.span}, {hours.place}) at {hours.local:%H:%M} "
            f"{hours.where.tz.key}, and no quiet-hours exemption applies ({purpose})"))
    source = ("TEXTBACK_OPENER_IS_REPLY_OVERRIDE" if ctx.settings.opener_is_reply_override
              else "opener_is_reply")
    return Verdict(Kind.allow, cause=Cause.quiet_hours, reason=(
        f"answers the caller's own call (quiet hours exemption, {source}) at {hours.local:%H:%M} "
        f"{hours.where.tz.key}, outside {hours.span} ({hours.place})"))


def line_type_allows(session: Session, ctx: AppContext, phone: str, now: datetime) -> str | None:
    """Twilio Lookup line type (when enabled), cached for 30 days, failing open. Returns a reason to skip."""
    if not ctx.settings.line_type_lookup or ctx.gateway is None:
        return None
    cached = session.get(LineTypeCache, phone)
    if cached is None or cached.checked_at < now - timedelta(days=30):
        session.commit()  # never hold a transaction (on SQLite, the write lock) across the network call
        try:
            line_type = ctx.gateway.line_type(phone)
        except Exception:  # lookup is advisory: fail open, the send's own errors still count
            return None
        cached = cached or LineTypeCache(phone=phone)
        cached.line_type, cached.checked_at = line_type, now
        session.add(cached)
    if cached.line_type in NOT_TEXTABLE_LINE_TYPES:
        return f"line type {cached.line_type}"
    return None
