"""Runs conversation scripts through the real webhooks: one fresh service per script, every form signed.

Each script gets its own service, as it runs in production but in dry-run: a fresh SQLite database in a
temporary directory, the eval brokers (service.evals.scripts.EVAL_BROKERS) written to a brokers file, no
Twilio credentials (texts are stored as rows and never leave the process), no LLM key (rules only), and the
app from `create_app` behind a litestar TestClient. Every webhook form is built and signed by the Twilio fake
(service.twilio.fake) exactly as Twilio signs it, against the settings' public URL. After each step the
driver reads the `OutboundMessage` rows the step created and compares the template ids that will reach the
borrower and the broker with the script's expectations (exact lists, in the order they were queued).

    report = run_conversations(Path("evals/conversations"), Path("policies"))
    report.passed, report.total, report.failures

This module imports the app; service.evals.runner imports it only when the conversation set runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func
from sqlmodel import Session, col, select

from service.app import create_app
from service.context import AppContext, build_context
from service.evals.render import ConversationReport, ScriptResult, StepFailure
from service.evals.scripts import (
    EVAL_BROKERS,
    AnsweredCall,
    LeadExpect,
    MissedCall,
    Script,
    Step,
    load_scripts,
)
from service.models import Lead, OutboundMessage
from service.phones import InvalidPhone, to_e164
from service.policy.guard import OutputGuard
from service.replies.rules import load_rules
from service.sending.policy import load_sending_policy
from service.settings import Settings
from service.store import is_opted_out, saved_id
from service.templates import load_templates
from service.twilio.fake import call_form, dial_status_form, signature_headers, sms_form

PUBLIC_URL = "https://textback-evals.example.com"
ACCOUNT_SID = "AC" + "e7a1" * 8

# Rows with these statuses reach their recipient (now, or after a quiet-hours deferral for `pending`).
SENT_STATUSES = frozenset({"pending", "sending", "sent", "dry_run"})
LEAD_FIELDS = ("state", "closed_reason", "loan_type", "timeline", "applied_elsewhere")


class _MemoGuard:
    """The output guard with its verdicts remembered by (text, required values, template).

    Every script's service renders the same templates for the same brokers, and checks all of them at start-up
    (`AppContext.warm_up`); the guard is a pure function of the text, so a remembered verdict is the verdict.
    """

    def __init__(self, guard: Any) -> None:
        self._guard = guard
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...], str | None], Any] = {}

    def check(self, text: str, *, required: Any = None, template: str | None = None) -> Any:
        key = (text, tuple(sorted((required or {}).items())), template)
        if key not in self._seen:
            self._seen[key] = self._guard.check(text, required=required, template=template)
        return self._seen[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._guard, name)


@dataclass
class _Shared:
    """Built once per run and given to every script's context: the guard alone costs seconds to build."""

    policies_dir: Path
    guard: Any
    rules: Any
    sending: Any


def _brokers_yaml() -> str:
    return yaml.safe_dump({"brokers": list(EVAL_BROKERS.values())}, sort_keys=False)


def _settings(workdir: Path, policies_dir: Path) -> Settings:
    # Every value that changes behaviour is given here, so the environment cannot leak into an eval run.
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{workdir / 'textback.db'}",
        public_url=PUBLIC_URL,
        brokers_file=workdir / "brokers.yaml",
        policies_dir=policies_dir,
        twilio_account_sid=None,
        twilio_auth_token=None,
        openai_api_key=None,
        openai_base_url=None,
        opener_cooldown_hours=24.0,
        max_automated_texts_per_lead=None,
        operator_alert_to=[],
        do_not_text_file=None,
        opener_is_reply_override=None,
        line_type_lookup=False,
        run_worker=False,
        log_level="WARNING",
    )


def _sid(prefix: str, *parts: object) -> str:
    return prefix + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:32]


class _Driver:
    """Posts one script's webhooks, signed as Twilio signs them, and reads what each step queued."""

    def __init__(self, script: Script, ctx: AppContext, client: TestClient[Litestar]) -> None:
        self.script, self.ctx, self.client = script, ctx, client
        self.broker = EVAL_BROKERS[script.broker]
        self.calls = 0
        self.texts = 0
        self.last_call_sid: str | None = None
        self.http_errors: list[str] = []

    def post(self, path: str, params: dict[str, str]) -> str:
        headers = signature_headers(token=self.ctx.settings.signing_token, public_url=PUBLIC_URL, path=path,
                                    form=params)
        response = self.client.post(path, data=params, headers=headers)
        if response.status_code != 200:
            self.http_errors.append(f"{path} -> HTTP {response.status_code}")
        return response.text

    def _call(self, caller: str, call_sid: str, **extra: str) -> dict[str, str]:
        return call_form(call_sid, caller, self.broker["twilio_number"], account_sid=ACCOUNT_SID, **extra)

    def _dial(self, caller: str, call_sid: str, status: str, **extra: str) -> dict[str, str]:
        return dial_status_form(call_sid, caller, self.broker["twilio_number"], status, account_sid=ACCOUNT_SID,
                                **extra)

    def _new_call_sid(self) -> str:
        self.calls += 1
        self.last_call_sid = _sid("CA", self.script.id, "call", self.calls)
        return self.last_call_sid

    def missed_call(self, caller: str, spec: MissedCall) -> None:
        if spec.same_call and self.last_call_sid:
            sid = self.last_call_sid
        else:
            sid = self._new_call_sid()
        forwarded = {"ForwardedFrom": spec.forwarded_from} if spec.forwarded_from else {}
        self.post("/twilio/voice", self._call(caller, sid, **forwarded))
        if not forwarded and self.broker["mode"] == "forwarding":
            leg = _sid("CA", sid, "leg")
            screen = spec.screen or ("no_key" if spec.status == "completed" and self.broker["call_screening"]
                                     else "none")
            if screen == "no_key":  # the whisper reached a voicemail greeting: no key, the gather times out
                child = {"ParentCallSid": sid, "Direction": "outbound-dial", "CallStatus": "in-progress"}
                self.post("/twilio/voice/screen", self._call(caller, leg, **child))
                self.post("/twilio/voice/screen/accept", self._call(caller, leg, **child, Digits=""))
            dial = {"DialCallSid": leg}
            if spec.bridged is not None:
                dial["DialBridged"] = "true" if spec.bridged else "false"
            if spec.duration is not None:
                dial["DialCallDuration"] = str(spec.duration)
            self.post("/twilio/voice/dial-status", self._dial(caller, sid, spec.status, **dial))
        if spec.voicemail:
            recording = _sid("RE", sid)
            url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording}"
            self.post("/twilio/voice/voicemail", self._call(
                caller, sid, CallStatus="in-progress", RecordingSid=recording, RecordingDuration="21",
                RecordingUrl=url))

    def call_answered(self, caller: str, spec: AnsweredCall) -> None:
        sid = self._new_call_sid()
        self.post("/twilio/voice", self._call(caller, sid))
        leg = _sid("CA", sid, "leg")
        dial = {"DialCallSid": leg, "DialCallDuration": str(spec.duration)}
        if self.broker["call_screening"]:
            child = {"ParentCallSid": sid, "Direction": "outbound-dial", "CallStatus": "in-progress"}
            self.post("/twilio/voice/screen", self._call(caller, leg, **child))
            self.post("/twilio/voice/screen/accept", self._call(caller, leg, **child, Digits="1"))
        else:
            dial["DialBridged"] = "true"
        self.post("/twilio/voice/dial-status", self._dial(caller, sid, "completed", **dial))

    def sms(self, caller: str, text: str, opt_out_type: str | None) -> None:
        self.texts += 1
        sid = _sid("SM", self.script.id, "sms", self.texts)
        extra = {"OptOutType": opt_out_type} if opt_out_type else {}
        self.post("/twilio/sms", sms_form(text, caller, self.broker["twilio_number"], sid=sid,
                                          account_sid=ACCOUNT_SID, **extra))

    def max_outbound_id(self) -> int:
        with Session(self.ctx.engine) as session:
            return session.exec(select(func.max(OutboundMessage.id))).one() or 0

    def outbound_since(self, after: int) -> list[Any]:
        with Session(self.ctx.engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(OutboundMessage).where(col(OutboundMessage.id) > after).order_by(col(OutboundMessage.id))
            ).all()
            for row in rows:
                session.expunge(row)
        return list(rows)


def _caller(raw: str) -> str | None:
    try:
        return to_e164(raw)
    except InvalidPhone:
        return None


def _run_step(driver: _Driver, number: int, step: Step, result: ScriptResult) -> None:
    script = driver.script
    caller_raw = step.from_ if step.from_ is not None else script.caller
    before = driver.max_outbound_id()
    driver.http_errors.clear()
    if step.missed_call is not None:
        driver.missed_call(caller_raw, step.missed_call)
    elif step.call_answered is not None:
        driver.call_answered(caller_raw, step.call_answered)
    else:
        driver.sms(caller_raw, step.sms or "", step.opt_out_type)
    rows = driver.outbound_since(before)
    sent = [r for r in rows if r.status in SENT_STATUSES]
    borrower = [r.template_id for r in sent if r.audience == "borrower"]
    broker = [r.template_id for r in sent if r.audience == "broker"]
    result.transcript.append({
        "step": number, "action": step.action, "borrower": borrower, "broker": broker,
        "held": [f"{r.template_id} ({r.status}: {r.last_error})"
                 for r in rows if r.status not in SENT_STATUSES],
        "deferred": [r.template_id for r in sent if r.status == "pending"],
    })
    where = str(number)
    fail = result.failures.append
    for error in driver.http_errors:
        fail(StepFailure(script.id, where, "http", "HTTP 200", error))
    if borrower != step.expect.borrower:
        fail(StepFailure(script.id, where, "borrower", step.expect.borrower, borrower))
    if broker != step.expect.broker:
        fail(StepFailure(script.id, where, "broker", step.expect.broker, broker))
    # Routing, whatever the script says: borrower texts only to this caller, alerts only to the broker's team,
    # everything from the broker's own Twilio number.
    caller = _caller(caller_raw)
    alert_to = driver.broker.get("alert_to") or [driver.broker["forward_to"]]
    for row in sent:
        ok_to = row.to_phone == caller if row.audience == "borrower" else row.to_phone in alert_to
        if not ok_to or row.from_phone != driver.broker["twilio_number"]:
            fail(StepFailure(script.id, where, "routing", f"{row.audience} text from the broker's number to "
                             f"{'the caller' if row.audience == 'borrower' else 'alert_to'}",
                             f"{row.template_id} from {row.from_phone} to {row.to_phone}"))


def _check_end(driver: _Driver, result: ScriptResult) -> None:
    end = driver.script.end
    if end is None:
        return
    sid = driver.script.id
    caller = _caller(driver.script.caller)
    with Session(driver.ctx.engine) as session:
        broker_id = saved_id(driver.ctx.brokers_by_number[driver.broker["twilio_number"]])
        lead = None
        if caller is not None:
            lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == caller)).first()
        if end.no_lead and lead is not None:
            result.failures.append(StepFailure(sid, "end", "lead", "no lead", f"lead in state {lead.state}"))
        if end.opted_out is not None and caller is not None:
            got = is_opted_out(session, broker_id, caller, driver.ctx.sending_policy.opt_out_scope)
            if got != end.opted_out:
                result.failures.append(StepFailure(sid, "end", "opted_out", end.opted_out, got))
        if end.lead is None:
            return
        if lead is None:
            result.failures.append(StepFailure(sid, "end", "lead", "a lead", "no lead"))
            return
        _check_lead(sid, end.lead, lead, result.failures)


def _check_lead(sid: str, expect: LeadExpect, lead: Any, failures: list[StepFailure]) -> None:
    def fail(what: str, expected: object, actual: object) -> None:
        failures.append(StepFailure(sid, "end", what, expected, actual))

    want = expect.model_dump(exclude_unset=True)
    for name in LEAD_FIELDS:
        if name in want and getattr(lead, name) != want[name]:
            fail(f"lead.{name}", want[name], getattr(lead, name))
    reasons = set(lead.handoff_reasons or [])
    if expect.handoff_reasons is not None and reasons != set(expect.handoff_reasons):
        fail("lead.handoff_reasons", sorted(expect.handoff_reasons), sorted(reasons))
    if expect.handoff_reasons_include is not None and not set(expect.handoff_reasons_include) <= reasons:
        fail("lead.handoff_reasons ⊇", sorted(expect.handoff_reasons_include), sorted(reasons))
    if expect.handoff_reasons_any is not None and not set(expect.handoff_reasons_any) & reasons:
        fail("lead.handoff_reasons ∩", f"one of {sorted(expect.handoff_reasons_any)}", sorted(reasons))
    if expect.callback_window_has is not None:
        window = (lead.callback_window or "").lower()
        if not all(w.lower() in window for w in expect.callback_window_has):
            fail("lead.callback_window", f"containing {expect.callback_window_has}", lead.callback_window)


# A throwaway database per script: on tmpfs when the machine has one (commits cost no disk flush).
_TMPFS = "/dev/shm"  # noqa: S108 - only the parent of a tempfile.TemporaryDirectory (mkdtemp: unique name, 0700)
_SCRATCH = _TMPFS if Path(_TMPFS).is_dir() and os.access(_TMPFS, os.W_OK) else None


def run_script(script: Script, shared: _Shared) -> ScriptResult:
    """One script on its own service and database; failures are collected, never raised."""
    started = time.perf_counter()
    result = ScriptResult(script)
    with tempfile.TemporaryDirectory(prefix="textback-conv-", dir=_SCRATCH) as tmp:
        workdir = Path(tmp)
        (workdir / "brokers.yaml").write_text(_brokers_yaml(), encoding="utf-8")
        settings = _settings(workdir, shared.policies_dir)
        # The same guard, rules and sending policy for every script (the guard alone takes seconds to build).
        ctx = build_context(settings, guard=shared.guard, rules=shared.rules, sending_policy=shared.sending)
        try:
            app = create_app(ctx=ctx, run_worker=False)
            with TestClient(app=app, base_url="http://testserver.local") as client:
                driver = _Driver(script, ctx, client)
                for number, step in enumerate(script.steps, start=1):
                    _run_step(driver, number, step, result)
                _check_end(driver, result)
        finally:
            ctx.close()
    result.seconds = time.perf_counter() - started
    return result


def run_conversations(directory: Path, policies_dir: Path, *, guard: Any = None,
                      only: list[str] | None = None) -> ConversationReport:
    """Every script in `directory` (or only the ids given). Raises DatasetError for a malformed script."""
    started = time.perf_counter()
    templates = load_templates(policies_dir)
    scripts = load_scripts(directory, set(templates.templates))
    if only is not None:
        scripts = [s for s in scripts if s.id in only]
    if guard is None:
        guard = OutputGuard.load(policies_dir)
    shared = _Shared(
        policies_dir, _MemoGuard(guard), load_rules(policies_dir), load_sending_policy(policies_dir)
    )
    # Dry-run sends print each text to stdout; the eval's stdout carries numbers and ids only.
    with contextlib.redirect_stdout(io.StringIO()):
        results = [run_script(script, shared) for script in scripts]
    return ConversationReport(results=results, seconds=time.perf_counter() - started)
