"""The conversation scripts (``evals/conversations/*.yaml``): their format, the eval brokers they name, loading.

Scripts are run by service.evals.driver and reported by service.evals.render. A script is read by the one
strict YAML reader (service.yamlfile): duplicate keys are refused and a schema error names the file, line and
field.

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

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.evals.datasets import DatasetError
from service.yamlfile import YamlFileError, read_yaml

CONVERSATIONS_DIR = "conversations"

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
            script = read_yaml(path).validate(Script)
        except YamlFileError as exc:
            raise DatasetError("; ".join(str(problem) for problem in exc.problems)) from None
        if script.id != path.stem:
            raise DatasetError(f"{path}: id {script.id!r} must be the file name ({path.stem!r})")
        if template_ids is not None:
            for number, step in enumerate(script.steps, start=1):
                unknown = sorted(set(step.expect.borrower + step.expect.broker) - template_ids)
                if unknown:
                    raise DatasetError(f"{path}: step {number}: unknown template id(s) {unknown}")
        scripts.append(script)
    return scripts
