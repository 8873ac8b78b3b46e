"""Constants and helpers shared by the service tests (fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import respx
from sqlmodel import Session, select

from service.brokers import template_values
from service.context import AppContext
from service.models import OutboundMessage
from service.one_time import scrub
from service.replies.prescreen import ScreenedList
from service.replies.rule import CompiledRule
from service.replies.rules import RuleSet
from service.twilio import fake

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "test-auth-token-5f3b2c1d"  # a test value
PUBLIC_URL = "https://textback.example.com"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"

BROKER = "+14155550100"  # Dana's Twilio number
BROKER_CELL = "+14155550111"
BROKER_ALERT = "+14155550112"
BROKER2 = "+12125550100"  # a second broker, with a booking link
CALLER = "+14155550199"

BROKERS_YAML = f"""
brokers:
  - twilio_number: "{BROKER}"
    name: Dana Whitfield
    brokerage: Summit Home Loans
    nmls_id: "123456"
    company_nmls_id: "654321"
    forward_to: "{BROKER_CELL}"
    alert_to: ["{BROKER_ALERT}"]
    timezone: America/Los_Angeles
    ring_seconds: 18
    call_screening: true
  - twilio_number: "{BROKER2}"
    name: Marcus Chen
    brokerage: Harbor Mortgage Group
    nmls_id: "2233445"
    forward_to: "+12125550111"
    timezone: America/New_York
    booking_url: https://cal.example.com/marcus
    call_screening: false
"""

def message_json(to: str, from_: str, body: str, sid: str | None = None, status: str = "queued",
                 error_code: int | None = None) -> dict:
    """A Messages API response body shaped like Twilio's."""
    return fake.message_json(to, from_, body, sid=sid, status=status, account_sid=TWILIO_SID, error_code=error_code)


def twilio_created(request: httpx.Request) -> httpx.Response:
    """respx side effect: accept a Messages API create like Twilio does."""
    form = dict(httpx.QueryParams(request.content.decode()))
    return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))


def sent_texts(route: respx.Route) -> list[dict[str, str]]:
    """The form bodies of every Messages API request a route saw."""
    return [dict(httpx.QueryParams(call.request.content.decode())) for call in route.calls]


def rendered(ctx: AppContext, template_id: str, broker: str = BROKER, **values: str) -> str:
    """The text `template_id` renders to for `broker`: its reviewed wording, whatever a reviewer made it."""
    return ctx.templates.render(template_id, {**template_values(ctx.broker_for(broker)), **values}).text


def sent_templates(ctx: AppContext, route: respx.Route, to: str) -> list[str]:
    """The template id of every text the Messages API was asked to send to `to`, in order.

    Each text sent is matched to the stored row it was rendered into (recipient and body, whose one-time secrets
    are hidden once sent: service.one_time), so engine tests say which template went out, not how it is worded:
    a reviewer may reword a template without breaking them.
    """
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == to)).all()
    ids: list[str] = []
    for text in sent_texts(route):
        if text["To"] != to:
            continue
        # A text to the team keeps its body with the link's token (or the sign-in code) hidden once sent.
        bodies = {text["Body"], scrub(text["Body"], "alert")}
        [template_id] = {row.template_id for row in rows if row.body in bodies}
        ids.append(template_id)
    return ids


def call_params(call_sid: str = "CA" + "1" * 32, caller: str = CALLER, to: str = BROKER, **extra: str) -> dict[str, str]:
    return fake.call_form(call_sid, caller, to, account_sid=TWILIO_SID, **extra)


def dial_params(status: str, call_sid: str = "CA" + "1" * 32, caller: str = CALLER, to: str = BROKER,
                **extra: str) -> dict[str, str]:
    return fake.dial_status_form(call_sid, caller, to, status, account_sid=TWILIO_SID, **extra)


def sms_params(body: str, sid: str | None = None, sender: str = CALLER, to: str = BROKER, **extra: str) -> dict[str, str]:
    return fake.sms_form(body, sender, to, sid=sid, account_sid=TWILIO_SID, **extra)


def status_params(sid: str, status: str, to: str = CALLER, from_: str = BROKER, error_code: int | str | None = None,
                  **extra: str) -> dict[str, str]:
    return fake.status_form(sid, status, to=to, from_=from_, account_sid=TWILIO_SID,
                            error_code=None if error_code is None else str(error_code), **extra)


def messages_page(messages: list[dict]) -> dict[str, object]:
    """One page of the Messages list API holding `messages`."""
    return fake.message_list_json(messages, account_sid=TWILIO_SID)


_Seen = TypeVar("_Seen")


@contextmanager
def session_hooks(seen: _Seen) -> Iterator[_Seen]:
    """Listen to every ORM session's flushes, rollbacks and commits through `seen`'s methods of those names."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    hooks = {name: getattr(seen, name) for name in ("after_flush", "after_rollback", "after_commit")}
    for name, hook in hooks.items():
        event.listen(Session, name, hook)
    try:
        yield seen
    finally:
        for name, hook in hooks.items():
            event.remove(Session, name, hook)


def unscreened_rules(rules: RuleSet) -> RuleSet:
    """A rule set of its own with the same rules and every pre-screen switched off: each pattern and each ignore
    runs on every reply (what the screens and the rule index must never change)."""
    def plain(rule: CompiledRule) -> CompiledRule:
        ignores = tuple((pattern, ()) for pattern, _ in rule.ignores)
        return dataclasses.replace(rule, screen=None, screens=tuple(() for _ in rule.ordered), ignores=ignores,
                                   ignore_list=ScreenedList(ignores))
    return RuleSet(version=rules.version, files=rules.files, rules=[plain(r) for r in rules._rules + rules._hints],
                   policies_dir=rules.policies_dir, speller=rules.speller, scopes=rules.scopes)
