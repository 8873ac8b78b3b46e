"""The conversation set: multi-turn scripts (``evals/conversations/*.yaml``) run through the real webhooks.

Each script gets its own service, as it runs in production but in dry-run: a fresh SQLite database in a
temporary directory, the eval brokers below written to a brokers file, no Twilio credentials (texts are
stored as rows and never leave the process), no LLM key (rules only), and the app from `create_app`
behind a litestar TestClient. Every webhook is signed exactly as Twilio signs it, against the settings'
public URL. After each step the runner reads the `OutboundMessage` rows the step created and compares the
template ids that will reach the borrower and the broker with the script's expectations (exact lists, in
the order they were queued).

    report = run_conversations(Path("evals/conversations"), Path("policies"))
    report.passed, report.total, report.failures

A script (one per file, ``id`` = the file name)::

    id: c01_purchase_one_answer_per_text
    title: Missed call, then purchase / timeline / applied elsewhere, one answer per text
    broker: screening            # screening | booking | carrier (see EVAL_BROKERS)
    caller: "+15035550142"
    tags: [purchase, timeline]
    steps:
      - missed_call: {status: no-answer}
        expect: {borrower: [opener], broker: []}
      - sms: "Purchase"
        expect: {borrower: [ask_timeline], broker: []}
    end:
      lead: {state: asking, loan_type: purchase}

Actions (one per step): ``missed_call`` (``status``: a DialCallStatus, ``bridged``, ``forwarded_from``,
``screen``: ``none`` | ``no_key``, ``same_call``: a Twilio retry of the previous call, ``voicemail``),
``call_answered`` (screened and accepted, or bridged without screening), ``sms`` (a text; ``opt_out_type``
adds Twilio's OptOutType field). ``from`` overrides the caller for one step (e.g. ``anonymous``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.evals.datasets import DatasetError

if TYPE_CHECKING:
    from litestar.testing import TestClient

    from service.context import AppContext
    from service.settings import Settings

CONVERSATIONS_DIR = "conversations"
PUBLIC_URL = "https://textback-evals.example.com"
ACCOUNT_SID = "AC" + "e7a1" * 8

# The eval brokers, keyed by the name a script uses. Fictional 555-01xx numbers.
EVAL_BROKERS: dict[str, dict[str, Any]] = {
    # Forwarding with call screening: a completed dial without a key press is a voicemail pickup.
    "screening": {
        "twilio_number": "+15035550100",
        "name": "Priya Nandakumar",
        "brokerage": "Cascade Lending Partners",
        "nmls_id": "1122334",
        "forward_to": "+15035550101",
        "alert_to": ["+15035550102"],
        "timezone": "America/Los_Angeles",
        "ring_seconds": 18,
        "mode": "forwarding",
        "call_screening": True,
    },
    # Forwarding without screening, with a booking link; alerts go to forward_to (no alert_to).
    "booking": {
        "twilio_number": "+13035550200",
        "name": "Tomas Herrera",
        "brokerage": "Front Range Home Finance",
        "nmls_id": "778899",
        "company_nmls_id": "445566",
        "forward_to": "+13035550201",
        "timezone": "America/Denver",
        "booking_url": "https://book.example.com/tomas",
        "ring_seconds": 20,
        "mode": "forwarding",
        "call_screening": False,
    },
    # The broker keeps their own number; the carrier forwards unanswered calls to the Twilio number.
    "carrier": {
        "twilio_number": "+16175550300",
        "name": "Grace Okafor",
        "brokerage": "Bay State Mortgage Co",
        "nmls_id": "5566778",
        "forward_to": "+16175550301",
        "alert_to": ["+16175550302"],
        "timezone": "America/New_York",
        "mode": "forward_on_no_answer",
        "call_screening": False,
    },
}

# Rows with these statuses reach their recipient (now, or after a quiet-hours deferral for `pending`).
SENT_STATUSES = frozenset({"pending", "sending", "sent", "dry_run"})
DIAL_STATUSES = ("no-answer", "busy", "failed", "canceled", "completed")
LEAD_FIELDS = ("state", "closed_reason", "loan_type", "timeline", "applied_elsewhere")


# --------------------------------------------------------------------------------------------- the format
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MissedCall(_Strict):
    status: Literal["no-answer", "busy", "failed", "canceled", "completed"] = "no-answer"
    bridged: bool | None = None  # DialBridged, sent when given (brokers without screening)
    duration: int | None = None  # DialCallDuration
    forwarded_from: str | None = None  # carrier-forwarded: /twilio/voice carries ForwardedFrom
    screen: Literal["none", "no_key"] | None = None  # screening broker: the whisper played, no key pressed
    same_call: bool = False  # Twilio redelivers the previous call's webhooks (same CallSid)
    voicemail: bool = False  # the caller leaves a voicemail after the miss


class AnsweredCall(_Strict):
    duration: int = 240


class Expect(_Strict):
    borrower: list[str]
    broker: list[str]


class Step(_Strict):
    missed_call: MissedCall | None = None
    call_answered: AnsweredCall | None = None
    sms: str | None = None
    opt_out_type: Literal["STOP", "START", "HELP"] | None = None
    from_: str | None = Field(default=None, alias="from")
    note: str | None = None
    expect: Expect

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        actions = [a for a in (self.missed_call, self.call_answered, self.sms) if a is not None]
        if len(actions) != 1:
            msg = "each step needs exactly one of missed_call, call_answered, sms"
            raise ValueError(msg)
        if self.opt_out_type and self.sms is None:
            msg = "opt_out_type goes with an sms step"
            raise ValueError(msg)
        return self

    @property
    def action(self) -> str:
        if self.missed_call is not None:
            return "missed_call"
        return "call_answered" if self.call_answered is not None else "sms"


class LeadExpect(_Strict):
    state: str | None = None
    closed_reason: str | None = None
    loan_type: str | None = None
    timeline: str | None = None
    applied_elsewhere: bool | None = None
    callback_window_has: list[str] | None = None  # words the captured window must contain
    handoff_reasons: list[str] | None = None  # the exact set
    handoff_reasons_include: list[str] | None = None
    handoff_reasons_any: list[str] | None = None  # at least one of these (e.g. wire: closing or deadline)


class End(_Strict):
    lead: LeadExpect | None = None
    no_lead: bool = False  # the caller has no lead at all (nothing was started)
    opted_out: bool | None = None


class Script(_Strict):
    id: str
    title: str
    broker: Literal["screening", "booking", "carrier"]
    caller: str
    tags: list[str] = Field(default_factory=list)
    why: str | None = None
    # The service does something a broker or borrower would not expect, reported and not yet fixed: the script
    # keeps the right expectation, its failure is listed as a known issue, and it must fail (a script that
    # passes while marked is reported, so the note is removed once the service is fixed).
    known_issue: str | None = None
    steps: list[Step] = Field(min_length=1)
    end: End | None = None


def load_scripts(directory: Path, template_ids: set[str] | None = None) -> list[Script]:
    """Every ``*.yaml`` in `directory`, validated; a bad file is a DatasetError naming it."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise DatasetError(f"{directory}: no conversation scripts (*.yaml)")
    scripts: list[Script] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            script = Script.model_validate(data)
        except OSError as exc:
            raise DatasetError(f"{path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DatasetError(f"{path}: invalid YAML ({exc})") from None
        except ValidationError as exc:
            where = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors())
            raise DatasetError(f"{path}: {where}") from None
        if script.id != path.stem:
            raise DatasetError(f"{path}: id {script.id!r} must be the file name ({path.stem!r})")
        if template_ids is not None:
            for number, step in enumerate(script.steps, start=1):
                unknown = sorted(set(step.expect.borrower + step.expect.broker) - template_ids)
                if unknown:
                    raise DatasetError(f"{path}: step {number}: unknown template id(s) {unknown}")
        scripts.append(script)
    return scripts


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class StepFailure:
    script_id: str
    step: str  # "3" (1-based), or "end"
    what: str  # borrower | broker | http | routing | lead.<field> | opted_out
    expected: Any
    actual: Any

    def line(self) -> str:
        return f"{self.script_id} step {self.step} {self.what}: expected {self.expected} got {self.actual}"


@dataclass
class ScriptResult:
    script: Script
    failures: list[StepFailure] = field(default_factory=list)
    seconds: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)  # per step: what went out

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def known_issue(self) -> bool:
        """Marked as a known service issue and still failing, as expected."""
        return bool(self.script.known_issue) and not self.passed

    @property
    def unexpected_pass(self) -> bool:
        """Marked as a known issue but passing: the service was fixed; remove the note."""
        return bool(self.script.known_issue) and self.passed


@dataclass
class ConversationReport:
    results: list[ScriptResult]
    seconds: float

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed_ids(self) -> list[str]:
        """Scripts failing that are not marked as a known issue."""
        return [r.script.id for r in self.results if not r.passed and not r.script.known_issue]

    @property
    def known_issue_ids(self) -> list[str]:
        return [r.script.id for r in self.results if r.known_issue]

    @property
    def unexpected_pass_ids(self) -> list[str]:
        return [r.script.id for r in self.results if r.unexpected_pass]

    @property
    def failures(self) -> list[StepFailure]:
        """The failures of scripts not marked as a known issue."""
        return [f for r in self.results if not r.script.known_issue for f in r.failures]

    @property
    def known_failures(self) -> list[StepFailure]:
        return [f for r in self.results if r.script.known_issue for f in r.failures]


# ------------------------------------------------------------------------------------------------- runner
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
    from service.settings import Settings  # noqa: PLC0415

    # Every value that changes behaviour is given here, so the environment cannot leak into an eval run.
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
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

    def __init__(self, script: Script, ctx: AppContext, client: TestClient) -> None:
        self.script, self.ctx, self.client = script, ctx, client
        self.broker = EVAL_BROKERS[script.broker]
        self.calls = 0
        self.texts = 0
        self.last_call_sid: str | None = None
        self.http_errors: list[str] = []

    def post(self, path: str, params: dict[str, str]) -> str:
        from service.twilio.signature import sign  # noqa: PLC0415

        signature = sign(token=self.ctx.settings.signing_token, url=PUBLIC_URL + path, params=params)
        response = self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        if response.status_code != 200:  # noqa: PLR2004
            self.http_errors.append(f"{path} -> HTTP {response.status_code}")
        return response.text

    def _call(self, caller: str, call_sid: str, **extra: str) -> dict[str, str]:
        to = self.broker["twilio_number"]
        return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid, "From": caller,
                "To": to, "Caller": caller, "Called": to, "Direction": "inbound", "CallStatus": "ringing",
                **extra}

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
            dial = {"DialCallStatus": spec.status, "DialCallSid": leg, "CallStatus": "in-progress"}
            if spec.bridged is not None:
                dial["DialBridged"] = "true" if spec.bridged else "false"
            if spec.duration is not None:
                dial["DialCallDuration"] = str(spec.duration)
            self.post("/twilio/voice/dial-status", self._call(caller, sid, **dial))
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
        dial = {"DialCallStatus": "completed", "DialCallSid": leg, "CallStatus": "in-progress",
                "DialCallDuration": str(spec.duration)}
        if self.broker["call_screening"]:
            child = {"ParentCallSid": sid, "Direction": "outbound-dial", "CallStatus": "in-progress"}
            self.post("/twilio/voice/screen", self._call(caller, leg, **child))
            self.post("/twilio/voice/screen/accept", self._call(caller, leg, **child, Digits="1"))
        else:
            dial["DialBridged"] = "true"
        self.post("/twilio/voice/dial-status", self._call(caller, sid, **dial))

    def sms(self, caller: str, text: str, opt_out_type: str | None) -> None:
        self.texts += 1
        sid = _sid("SM", self.script.id, "sms", self.texts)
        params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid,
                  "SmsMessageSid": sid, "SmsSid": sid, "From": caller, "To": self.broker["twilio_number"],
                  "Body": text, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received"}
        if opt_out_type:
            params["OptOutType"] = opt_out_type
        self.post("/twilio/sms", params)

    def max_outbound_id(self) -> int:
        from sqlalchemy import func  # noqa: PLC0415
        from sqlmodel import Session, select  # noqa: PLC0415

        from service.models import OutboundMessage  # noqa: PLC0415

        with Session(self.ctx.engine) as session:
            return session.exec(select(func.max(OutboundMessage.id))).one() or 0

    def outbound_since(self, after: int) -> list[Any]:
        from sqlmodel import Session, select  # noqa: PLC0415

        from service.models import OutboundMessage  # noqa: PLC0415

        with Session(self.ctx.engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(OutboundMessage).where(OutboundMessage.id > after).order_by(OutboundMessage.id)
            ).all()
            for row in rows:
                session.expunge(row)
        return list(rows)


def _caller(raw: str) -> str | None:
    from service.phones import InvalidPhone, to_e164  # noqa: PLC0415

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
    from sqlmodel import Session, select  # noqa: PLC0415

    from service.models import Lead  # noqa: PLC0415
    from service.store import is_opted_out  # noqa: PLC0415

    end = driver.script.end
    if end is None:
        return
    sid = driver.script.id
    caller = _caller(driver.script.caller)
    with Session(driver.ctx.engine) as session:
        broker_id = driver.ctx.brokers_by_number[driver.broker["twilio_number"]].id
        lead = None
        if caller is not None:
            lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == caller)).first()
        if end.no_lead and lead is not None:
            result.failures.append(StepFailure(sid, "end", "lead", "no lead", f"lead in state {lead.state}"))
        if end.opted_out is not None and caller is not None:
            got = is_opted_out(session, broker_id, caller)
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
_SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None


def run_script(script: Script, shared: _Shared) -> ScriptResult:
    """One script on its own service and database; failures are collected, never raised."""
    from litestar.testing import TestClient  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415
    from service.context import build_context  # noqa: PLC0415

    started = time.perf_counter()
    result = ScriptResult(script)
    with tempfile.TemporaryDirectory(prefix="textback-conv-", dir=_SCRATCH) as tmp:
        workdir = Path(tmp)
        (workdir / "brokers.yaml").write_text(_brokers_yaml(), encoding="utf-8")
        settings = _settings(workdir, shared.policies_dir)
        ctx = build_context(settings)
        # The same guard, rules and sending policy for every script (the guard alone takes seconds to build).
        ctx._guard, ctx._rules, ctx._sending = shared.guard, shared.rules, shared.sending  # noqa: SLF001
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
    from service.replies.rules import load_rules  # noqa: PLC0415
    from service.sending.policy import load_sending_policy  # noqa: PLC0415
    from service.templates import load_templates  # noqa: PLC0415

    started = time.perf_counter()
    templates = load_templates(policies_dir)
    scripts = load_scripts(directory, set(templates.templates))
    if only is not None:
        scripts = [s for s in scripts if s.id in only]
    if guard is None:
        from service.policy.guard import OutputGuard  # noqa: PLC0415 - imports guardrails (~5 s)

        guard = OutputGuard.load(policies_dir)
    shared = _Shared(
        policies_dir, _MemoGuard(guard), load_rules(policies_dir), load_sending_policy(policies_dir)
    )
    textback_logger = logging.getLogger("textback")
    handlers, level = list(textback_logger.handlers), textback_logger.level
    propagate = textback_logger.propagate
    try:
        # Dry-run sends print each text to stdout; the eval's stdout carries numbers and ids only.
        with contextlib.redirect_stdout(io.StringIO()):
            results = [run_script(script, shared) for script in scripts]
    finally:  # create_app configures logging; give the caller's back
        textback_logger.handlers[:] = handlers
        textback_logger.setLevel(level)
        textback_logger.propagate = propagate
    return ConversationReport(results=results, seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------------------------- thresholds
def broken_lines(report: ConversationReport, scripts_min: int, failed_max: int) -> list[str]:
    """One line per broken conversation threshold, naming the scripts behind it."""
    lines: list[str] = []
    if report.total < scripts_min:
        lines.append(f"conversation scripts {report.total} < {scripts_min}")
    failed = report.failed_ids
    if len(failed) > failed_max:
        lines.append(f"conversation scripts failing {len(failed)} > {failed_max} ({' '.join(failed)})")
    if report.unexpected_pass_ids:
        lines.append(
            "conversation scripts marked known_issue now pass (remove the note): "
            + " ".join(report.unexpected_pass_ids)
        )
    return lines


# ---------------------------------------------------------------------------------------------- rendering
def table_lines(report: ConversationReport) -> list[str]:
    """The stdout section: numbers, script ids and template ids, never a borrower's words."""
    known = len(report.known_issue_ids)
    lines = [
        f"conversations: {report.passed}/{report.total} scripts pass"
        + (f" · {known} known service issue(s)" if known else "")
        + f" · {report.seconds:.2f}s"
    ]
    lines += [f"  ✗ {f.line()}" for f in report.failures]
    if known:
        lines.append(f"  known issues (still failing): {' '.join(report.known_issue_ids)}")
    if report.unexpected_pass_ids:
        lines.append(f"  marked known_issue but passing: {' '.join(report.unexpected_pass_ids)}")
    return lines


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_lines(report: ConversationReport) -> list[str]:
    md = ["## Conversations (multi-turn scripts through the webhooks)", ""]
    md.append(
        f"{report.passed}/{report.total} scripts pass ({report.seconds:.1f} s). Each runs on its own fresh "
        "SQLite database, in dry-run, rules only, every webhook signed as Twilio signs it; a step lists the "
        "template ids queued for the borrower and for the broker."
    )
    md += ["", "| script | broker | steps | result | title |", "| --- | --- | --: | --- | --- |"]
    for r in report.results:
        mark = "✅" if r.passed and not r.script.known_issue else "⚠️ known issue" if r.known_issue else "❌"
        if r.unexpected_pass:
            mark = "❗ passes: remove known_issue"
        steps = len(r.script.steps)
        md.append(f"| {r.script.id} | {r.script.broker} | {steps} | {mark} | {_cell(r.script.title)} |")
    md += ["", "### Failures", ""]
    if not report.failures:
        md.append("None.")
    else:
        md += _failure_table(report.failures)
    issues = [r for r in report.results if r.script.known_issue]
    if issues:
        md += ["", "### Known service issues", ""]
        md += [f"- **{r.script.id}**: {_cell(r.script.known_issue)}" for r in issues]
        if report.known_failures:
            md += ["", *_failure_table(report.known_failures)]
    md.append("")
    return md


def _failure_table(failures: list[StepFailure]) -> list[str]:
    rows = ["| script | step | what | expected | got |", "| --- | --: | --- | --- | --- |"]
    rows += [
        f"| {f.script_id} | {f.step} | {f.what} | {_cell(f.expected)} | {_cell(f.actual)} |" for f in failures
    ]
    return rows
