"""Plays the demo history (service.demo.history) through the real service, each event at its own moment.

An in-process app (create_app, behind litestar's TestClient) on the given context gets every call and text as a
signed Twilio webhook (service.commands.simulate.post_signed, the simulator's own), and the team's texts and
outcomes through the leads API (POST /api/leads/{id}/messages and /outcome) as a signed-in user of the brokers
file. The process clock is moved with time_machine to each event's moment, so the webhooks, the worker's
follow-up after each of them (replies processed, texts sent) and its sweeps (texts held for quiet hours,
unworked-handoff reminders, each run when it falls due) all stamp historic times. Dry-run only: the texts are
stored, their printing silenced. No delivery-status callbacks are sent: a dry-run text has no Twilio SID
(the sender stores it as `dry_run`), so /twilio/sms/status could match none of them.

It refuses (SeedRefused) with Twilio credentials (it would text real people), with CRM webhooks in the brokers
file (the CRM would get the demo leads), and on a database that holds any lead it did not make. A lead is the
seed's when its calls and texts all carry the seed's SIDs (`CAdemo...`, `SMdemo...`: never a Twilio SID).
Run again on a database it seeded, it adds the history from the last call or event of the earlier runs up to
now: a day is drawn from the seed alone (service.demo.history), so the days continue, none is played twice.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import io
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import time_machine
from litestar.testing import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from service import handoff_sla, hours
from service.app import create_app
from service.commands.simulate import post_signed
from service.context import AppContext
from service.db import session_scope
from service.demo.history import CALL_MARK, Call, Desk, Person, Step, draw
from service.demo.ownership import last_seeded, lead_counts, refusal, tally
from service.errors import SeedRefused
from service.models import Audience, Lead, MessageStatus, OutboundMessage, utcnow
from service.settings import Settings
from service.twilio.fake import call_form, dial_status_form, sms_form
from service.web.principal import CSRF_HEADER, SESSION_COOKIE, start_session, users
from service.worker import Worker

# Office hours of the team when the brokers file gives none (local time): weekdays 8:00-19:00, Saturday 9-13.
OFFICE = {0: (8, 19), 1: (8, 19), 2: (8, 19), 3: (8, 19), 4: (8, 19), 5: (9, 13)}
SESSION_RENEW = timedelta(days=20)  # sessions last 30 days; a long history signs the person in again


@dataclass
class Summary:
    """What one run added."""

    brokers: int
    start: datetime
    end: datetime
    calls: int = 0
    answered: int = 0
    missed: int = 0
    leads: int = 0
    events: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    skipped: bool = False  # no call to add: an earlier run's history reaches (nearly) now

    def lines(self) -> list[str]:
        e = self.events
        return [
            f"brokers: {self.brokers}",
            f"history: {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC",
            f"calls: {self.calls} ({self.answered} answered by the broker, {self.missed} missed)",
            f"leads: {self.leads} ({e['opener']} openers)",
            f"replies: {e['reply']} ({e['handoff']} handed to a person, {e['opted_out']} opt-outs)",
            f"human contacts: {e['human_contact']} ({e['human_text']} texts from the team, {e['outcome']} outcomes)",
            f"time taken: {self.seconds:.1f} s",
        ]


def seed_settings(settings: Settings, spool_dir: Path) -> Settings:
    """The settings the seed runs the service with: the same database, brokers and policies, rules only (no
    LLM call for demo replies), no worker thread, and a spool of its own (the service's spool, if any, is
    left for the service to replay)."""
    return settings.model_copy(update={"openai_api_key": None, "run_worker": False, "spool_dir": spool_dir})


# -- the run --------------------------------------------------------------------------------------------------

def seed(ctx: AppContext, *, days: float, seed: int) -> Summary:
    """Fill the database behind `ctx` (built from seed_settings) with `days` of history up to now, or from
    where an earlier run ended. Raises SeedRefused (see refusal) before writing anything."""
    if ctx.settings.llm_enabled:
        raise ValueError("build the seed's context from seed_settings(): demo replies are read by the rules only")
    started = time.perf_counter()
    _, other = lead_counts(ctx.engine)
    why = refusal(ctx.settings, other_leads=other, brokers=list(ctx.brokers_by_number.values()))
    if why:
        raise SeedRefused(why)
    end = utcnow()
    start = end - timedelta(days=days)
    with Session(ctx.engine) as session:
        last = last_seeded(session)
    if last is not None:
        start = max(start, last + timedelta(seconds=1))
    summary = Summary(brokers=len(ctx.brokers_by_number), start=start, end=end)
    calls = draw(_desks(ctx), start, end, seed)
    if not calls:  # an earlier run reached (nearly) now: the same seed draws nothing new before now
        summary.skipped, summary.seconds = True, time.perf_counter() - started
        return summary
    leads_before, events_before = tally(ctx.engine)
    # Dry-run prints every text; hundreds of them would bury the summary.
    with contextlib.redirect_stdout(io.StringIO()), _Player(ctx, start, end) as player:
        player.play(calls)
        summary.calls, summary.answered, summary.missed = player.calls, player.answered, player.missed
    leads_after, events_after = tally(ctx.engine)
    summary.leads, summary.events = leads_after - leads_before, events_after - events_before
    summary.seconds = time.perf_counter() - started
    return summary


def _desks(ctx: AppContext) -> list[Desk]:
    """The brokers as the history needs them: their people are the non-admin users who see them."""
    everyone = users(ctx)
    desks = []
    for broker in sorted(ctx.brokers_by_number.values(), key=lambda b: b.twilio_number):
        people = []
        for user in sorted(everyone.values(), key=lambda u: u.phone):
            if broker.id in user.broker_ids and not user.admin:
                own = user.phone == broker.forward_to or user.name.startswith(broker.name)
                people.append(Person(user.phone, (broker.name if own else user.name).split()[0]))
        desks.append(Desk(number=broker.twilio_number, timezone=broker.timezone, brokerage=broker.brokerage,
                          people=tuple(people), avoid=frozenset(ctx.own_numbers | set(broker.do_not_text))))
    return desks


class _Player:
    """Runs the events in time order (a heap: an event may schedule the next step of its conversation)."""

    def __init__(self, ctx: AppContext, start: datetime, end: datetime) -> None:
        self.ctx, self.start, self.end = ctx, start, end
        self.app = create_app(ctx=ctx, run_worker=False)
        self.worker: Worker = self.app.state.worker
        self.queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.sessions: dict[str, tuple[dict[str, str], datetime]] = {}
        self.calls = self.answered = self.missed = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Player:
        self.clock = self._stack.enter_context(time_machine.travel(self.start, tick=True))
        self.client: TestClient[Any] = self._stack.enter_context(
            TestClient(app=self.app, base_url="http://textback-demo-seed.local"))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._sign_out()
        finally:
            self._stack.close()

    def play(self, calls: list[Call]) -> None:
        for call in calls:
            self._at(call.at, functools.partial(self._call, call))
        while self.queue:
            at, _, event = heapq.heappop(self.queue)
            if at > self.end:
                break
            self._advance(at)
            event()
        self._advance(self.end)

    def _at(self, at: datetime, event: Callable[[], None]) -> None:
        if at <= self.end:
            heapq.heappush(self.queue, (at, next(self.order), event))

    # -- the clock and the worker's sweep --

    def _advance(self, to: datetime) -> None:
        """Run the worker's sweep at each moment work falls due before `to` (a text held for quiet hours, an
        unworked-handoff reminder), then move the clock to `to`."""
        handled: datetime | None = None
        while (due := self._next_due()) is not None and due < to and (handled is None or due > handled):
            handled = due
            self.clock.move_to(max(due, utcnow()) + timedelta(seconds=1))
            self.worker.run_once()
        if to > utcnow():
            self.clock.move_to(to)

    def _next_due(self) -> datetime | None:
        brokers = {b.id: b for b in self.ctx.brokers_by_number.values()}
        with Session(self.ctx.engine) as session:
            text = session.exec(select(func.min(OutboundMessage.next_attempt_at))
                                .where(OutboundMessage.status == MessageStatus.pending)).one()
            waiting = handoff_sla.waiting(session, self.ctx)
        moments = [text] if text is not None else []
        for item in waiting:
            broker = brokers.get(item.broker_id)
            due = handoff_sla.due_at(broker, item) if broker is not None else None
            if due is not None:
                moments.append(max(due, item.handoff_at + timedelta(minutes=1)))
        return min(moments) if moments else None

    # -- calls and texts, as Twilio sends them --

    def _post(self, path: str, form: dict[str, str]) -> None:
        response = post_signed(self.client, self.ctx.settings, path, form)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")

    def _call(self, call: Call) -> None:
        broker = self.ctx.broker_for(call.broker)
        if broker is None:
            return
        if broker.mode == "forward_on_no_answer":
            # The broker's own phone rings first: only a missed call is forwarded to textback.
            if call.missed:
                self.calls, self.missed = self.calls + 1, self.missed + 1
                self._post("/twilio/voice", call_form(call.sid, call.caller, call.broker,
                                                      ForwardedFrom=broker.forward_to))
                self._then(call, 0)
            return
        self.calls += 1
        self._post("/twilio/voice", call_form(call.sid, call.caller, call.broker))
        leg = CALL_MARK + call.sid[len(CALL_MARK):][::-1]  # the broker's leg: a SID of the seed's own too
        if not call.missed and broker.call_screening:
            self._post("/twilio/voice/screen/accept", {"CallSid": leg, "ParentCallSid": call.sid, "Digits": "1"})
        extra = {"DialBridged": "true" if call.bridged else "false"} if call.dial_status == "completed" else {}
        self._post("/twilio/voice/dial-status", dial_status_form(
            call.sid, call.caller, call.broker, call.dial_status, DialCallSid=leg,
            DialCallDuration=str(call.duration), **extra))
        if call.missed:
            self.missed += 1
            self._then(call, 0)
        else:
            self.answered += 1

    def _then(self, call: Call, index: int) -> None:
        """Schedule the conversation's step `index`: a borrower answers after the text they answer has gone
        (it may be held for quiet hours); a person acts in office hours."""
        if index >= len(call.steps):
            return
        step, now = call.steps[index], utcnow()
        if step.actor == "borrower":
            at = max(now, self._bot_text_out(call)) + step.after
        else:
            at = self._office_time(call.broker, now + step.after, step.if_closed)
        self._at(at, functools.partial(self._step, call, index))

    def _step(self, call: Call, index: int) -> None:
        step = call.steps[index]
        if step.actor == "borrower" and step.body is not None and step.sid is not None:
            self._post("/twilio/sms", sms_form(step.body, call.caller, call.broker, sid=step.sid))
        elif step.person is not None:
            self._team(call, step)
        self._then(call, index + 1)

    def _bot_text_out(self, call: Call) -> datetime:
        """When the last text waiting to go to this caller from this broker goes (now when none waits)."""
        with Session(self.ctx.engine) as session:
            held = session.exec(select(func.max(OutboundMessage.next_attempt_at)).where(
                OutboundMessage.to_phone == call.caller, OutboundMessage.from_phone == call.broker,
                OutboundMessage.audience == Audience.borrower,
                OutboundMessage.status == MessageStatus.pending)).one()
        return held or utcnow()

    def _office_time(self, number: str, at: datetime, if_closed: timedelta) -> datetime:
        """`at` when the broker's team works then, else `if_closed` after they next open (the brokers file's
        `hours:`, or OFFICE)."""
        broker = self.ctx.broker_for(number)
        if broker is None:
            return at
        if broker.hours:
            if hours.is_open(broker, at):
                return at
            opening = hours.next_opening(broker, at)
            return opening + if_closed if opening is not None else at
        local = at.astimezone(ZoneInfo(broker.timezone))
        for day in range(8):
            date = (local + timedelta(days=day)).date()
            span = OFFICE.get(date.weekday())
            if span is None:
                continue
            opens = datetime(date.year, date.month, date.day, span[0], tzinfo=local.tzinfo)
            closes = opens.replace(hour=span[1])
            if local < opens:
                return opens.astimezone(at.tzinfo) + if_closed
            if local < closes:
                return at
        return at

    # -- the team, through the leads API --

    def _team(self, call: Call, step: Step) -> None:
        broker = self.ctx.broker_for(call.broker)
        with Session(self.ctx.engine) as session:
            lead_id = session.exec(select(Lead.id).where(Lead.broker_id == (broker.id if broker else None),
                                                         Lead.phone == call.caller)).first()
        if lead_id is None or step.person is None:
            return
        headers = self._signed_in(step.person)
        if step.outcome is not None:
            response = self.client.post(f"/api/leads/{lead_id}/outcome", headers=headers,
                                        json={"outcome": step.outcome, "note": step.note})
        else:
            response = self.client.post(f"/api/leads/{lead_id}/messages", headers=headers, json={"body": step.body})
        _expect(response, 200, 201, 409)  # 409: the borrower cannot be texted (opted out meanwhile)

    def _signed_in(self, phone: str) -> dict[str, str]:
        """The person's browser: a session of the console, renewed before it would expire."""
        known = self.sessions.get(phone)
        if known is not None and utcnow() - known[1] < SESSION_RENEW:
            return known[0]
        if known is not None:
            _expect(self.client.post("/api/auth/logout", headers=known[0]), 204)
        with session_scope(self.ctx.engine) as session:
            token, row = start_session(session, phone=phone, user_agent="textback demo seed")
            headers = {"Cookie": f"{SESSION_COOKIE}={token}", CSRF_HEADER: row.csrf_token}
        self.sessions[phone] = (headers, utcnow())
        return headers

    def _sign_out(self) -> None:
        for headers, _ in self.sessions.values():
            _expect(self.client.post("/api/auth/logout", headers=headers), 204)
        self.sessions.clear()


def _expect(response: httpx.Response, *statuses: int) -> None:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.url.path} answered {response.status_code}: {response.text[:200]}")
