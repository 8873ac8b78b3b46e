"""The gate verdicts a borrower text received, kept on its own row for the audit trail.

Each verdict (service.sending.gates) at queue time and at every send attempt is appended to
`OutboundMessage.verdicts` as a small dict with the reason a person reads:

    {"at": "2026-06-11T05:10:00.000000Z", "stage": "queue", "verdict": "allow", "cause": "quiet_hours",
     "reason": "answers the caller's own call (quiet hours exemption, opener_is_reply) at 22:10 ...",
     "until": null, "policy_version": "3f9c0a1b2c4d"}

A text withdrawn while it waited (a newer reply supersedes it, a person takes over) gets a `stage: waiting`
entry from the bulk UPDATE that withdraws it (`entry_sql`, a JSON append compiled for SQLite and PostgreSQL).

Why a JSON list on the row rather than a table of its own: the queueing code already INSERTs the row and every
send attempt already UPDATEs it, so the record costs no SQL statement on the hot path (the missed-call webhook
and a send have statement budgets). The price: verdicts are read with their text, never queried on their own,
which is all the audit export needs. `policy_version` is the policy-set version the gates and the guard ran
under (service.policy.files.policy_version, what the approvals name).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, String, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from service.models import ALLOWED_AFTER_OPTOUT, OutboundMessage
from service.sending.gates import Kind, Verdict

# A text that keeps meeting the same verdict (a lock busy for a minute, a retry held again) would grow its row
# without telling an examiner anything new: the same verdict as the last one is not appended again.
MAX_VERDICTS = 50


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def reason_of(verdict: Verdict, *, stage: str, purpose: str, policy_version: str | None) -> str:
    """The sentence the audit trail shows for one verdict."""
    reason = verdict.reason or ""
    version = f" (policy set {policy_version})" if policy_version else ""
    if verdict.kind is Kind.allow:
        if stage == "send" and purpose not in ALLOWED_AFTER_OPTOUT:
            return f"{reason}; not opted out at send time" if reason else "not opted out at send time"
        return reason or "allowed"
    if verdict.kind is Kind.defer:
        return f"held by {reason}" if reason.startswith("quiet hours") else f"held: {reason}"
    if verdict.kind is Kind.block:
        return f"blocked by the {reason}{version}"
    return f"suppressed: {reason}{version}"


def record(
    msg: OutboundMessage, verdict: Verdict, *, stage: str, now: datetime, policy_version: str | None
) -> None:
    """Append the verdict to the row (assigning a new list, so the ORM writes it with the row's own UPDATE)."""
    entry: dict[str, Any] = {
        "at": _iso(now),
        "stage": stage,
        "verdict": str(verdict.kind),
        "cause": str(verdict.cause) if verdict.cause else None,
        "reason": reason_of(verdict, stage=stage, purpose=msg.purpose, policy_version=policy_version),
        "until": _iso(verdict.until),
        "policy_version": policy_version,
    }
    previous = list(msg.verdicts or [])
    if previous and _same(previous[-1], entry):
        return
    if len(previous) >= MAX_VERDICTS:
        return
    msg.verdicts = [*previous, entry]


def entry_sql(reason: str, *, now: datetime) -> Any:
    """For a bulk UPDATE that stops texts still waiting (a newer reply, a person taking over): the verdicts
    column with a `withdrawn` entry appended, in SQL, so the UPDATE the code runs anyway records why and when
    (no statement more)."""
    entry = {"at": _iso(now), "stage": "waiting", "verdict": "suppress", "cause": None, "reason": reason,
             "until": None, "policy_version": None}
    return _Appended(OutboundMessage.verdicts, bindparam(None, json.dumps(entry), type_=String()))


class _Appended(FunctionElement[Any]):
    """`column` (a JSON list, or NULL) with one JSON value appended; compiled per dialect below."""

    type = JSON()
    name = "verdicts_appended"
    inherit_cache = True


@compiles(_Appended, "sqlite")
def _appended_sqlite(element: _Appended, compiler: Any, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"json_insert(coalesce({column}, '[]'), '$[#]', json({value}))"


@compiles(_Appended, "postgresql")
def _appended_postgresql(element: _Appended, compiler: Any, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"(coalesce(({column})::jsonb, '[]'::jsonb) || jsonb_build_array(({value})::jsonb))::json"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("stage", "verdict", "cause", "reason")
    return all(a.get(k) == b.get(k) for k in keys)


def version_of(ctx: Any, msg: OutboundMessage) -> str | None:
    """The policy-set version the gates and the guard run under (the one id the approvals name), read once at
    start-up (AppContext.policy_version); the text's own recorded version for a context without one."""
    return getattr(ctx, "policy_version", None) or msg.policy_version
