"""The brokers file: strict YAML describing each broker's Twilio number, identity and routing.

Read by the one strict YAML reader (service.yamlfile): duplicate keys are refused and every error names the
file, the line and the field (``brokers.yaml:8: brokers[0].timezone: ...``).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.errors import ConfigError
from service.hours import HoursConfig
from service.phones import is_strict_e164
from service.yamlfile import YamlFileError, read_yaml


class CallMode(StrEnum):
    FORWARDING = "forwarding"  # the Twilio number is published; we <Dial> the broker's cell
    FORWARD_ON_NO_ANSWER = "forward_on_no_answer"  # the carrier forwards unanswered calls to us


def _e164(value: str) -> str:
    if not isinstance(value, str) or not is_strict_e164(value):
        msg = f"{value!r} is not a valid E.164 phone number (like +14155550123)"
        raise ValueError(msg)
    return value


class Role(StrEnum):
    MEMBER = "member"  # sees the brokers whose team they are in
    ADMIN = "admin"  # sees every broker of the file


class TeamMember(BaseModel):
    """A console user besides the broker's own phones (forward_to and alert_to are users already)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=60)
    phone: str
    role: Role = Role.MEMBER

    @field_validator("phone")
    @classmethod
    def _check_phone(cls, value: str) -> str:
        return _e164(value)


# The events a broker's CRM webhook can subscribe to.
WEBHOOK_EVENTS = ("lead.created", "lead.updated", "lead.handoff", "lead.outcome")


class WebhookConfig(BaseModel):
    """An outgoing webhook to the broker's CRM: JSON bodies signed with HMAC-SHA256 using `secret`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(pattern=r"^https?://\S+$", max_length=500)
    secret: str = Field(min_length=16, max_length=200)
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in WEBHOOK_EVENTS]
        if unknown:
            msg = f"unknown event(s) {', '.join(map(repr, unknown))}; known: {', '.join(WEBHOOK_EVENTS)}"
            raise ValueError(msg)
        return value


class BrokerConfig(BaseModel):
    """One broker (or team) as written in the brokers file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    twilio_number: str
    name: str = Field(min_length=1, max_length=60)
    brokerage: str = Field(min_length=1, max_length=80)
    nmls_id: str = Field(pattern=r"^\d{1,12}$")
    company_nmls_id: str | None = Field(default=None, pattern=r"^\d{1,12}$")
    forward_to: str
    timezone: str
    booking_url: str | None = Field(default=None, pattern=r"^https://\S+$", max_length=200)
    alert_to: list[str] = Field(default_factory=list)
    ring_seconds: int = Field(default=18, ge=5, le=60)
    mode: CallMode = CallMode.FORWARDING
    call_screening: bool = True
    do_not_text: list[str] = Field(default_factory=list)
    transcribe_voicemail: bool = False  # Twilio transcribes each voicemail; the transcript is texted to alert_to
    team: list[TeamMember] = Field(default_factory=list)
    hours: HoursConfig | None = None  # working hours in `timezone`; None: the opener makes no promise of when
    handoff_sla_minutes: int = Field(default=15, ge=1, le=24 * 60)  # working minutes before an unworked re-alert
    backup_alert_to: list[str] = Field(default_factory=list)  # alerted after the re-alert goes unworked too
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    @field_validator("nmls_id", "company_nmls_id", mode="before")
    @classmethod
    def _nmls_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("twilio_number", "forward_to")
    @classmethod
    def _check_phone(cls, value: str) -> str:
        return _e164(value)

    @field_validator("alert_to", "do_not_text", "backup_alert_to")
    @classmethod
    def _check_phones(cls, value: list[str]) -> list[str]:
        return [_e164(v) for v in value]

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, like "Pacific"
            msg = f"{value!r} is not an IANA timezone (like America/New_York)"
            raise ValueError(msg) from None
        return value

    @model_validator(mode="after")
    def _defaults(self) -> BrokerConfig:
        if not self.alert_to:
            self.alert_to = [self.forward_to]
        if self.forward_to == self.twilio_number:
            msg = "forward_to must be the broker's own phone, not the Twilio number (it would loop)"
            raise ValueError(msg)
        return self


def load_brokers(path: Path) -> list[BrokerConfig]:
    """Read and validate the brokers file; every error names the file and line."""
    if not path.exists():
        raise ConfigError(
            f"{path}: brokers file not found (set TEXTBACK_BROKERS_FILE or copy brokers.example.yaml)"
        )
    try:
        doc = read_yaml(path)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("brokers"), list) or set(data) != {"brokers"}:
        raise ConfigError(f"{path}:1: expected one top-level key 'brokers' holding a list of brokers")
    brokers: list[BrokerConfig] = []
    errors: list[str] = []
    for index, item in enumerate(data["brokers"]):
        try:
            brokers.append(doc.validate(BrokerConfig, item, prefix=("brokers", index)))
        except YamlFileError as exc:
            errors += [str(problem) for problem in exc.problems]
    numbers = [b.twilio_number for b in brokers]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        errors.append(f"{path}: twilio_number used by more than one broker: {', '.join(dupes)}")
    if errors:
        raise ConfigError("invalid brokers file:\n  " + "\n  ".join(errors))
    return brokers


# The template placeholders a broker's own values fill, and the brokers-file key each one comes from.
TEMPLATE_FIELDS: dict[str, str] = {
    "broker_name": "name",
    "brokerage": "brokerage",
    "nmls_id": "nmls_id",
    "company_nmls_id": "company_nmls_id",
    "booking_url": "booking_url",
    "broker_phone": "twilio_number",
}


def template_values(broker: Any) -> dict[str, str]:
    """The placeholder values of one broker (a BrokerConfig or the stored Broker row: same attributes)."""
    return {name: str(getattr(broker, key) or "") for name, key in TEMPLATE_FIELDS.items()}


def field_lines(path: Path) -> list[dict[str, int]]:
    """For each broker in the file, the 1-based line of each key's value (and "" for the entry itself)."""
    node = read_yaml(path).node
    items: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        items = next((list(v.value) for k, v in node.value if k.value == "brokers" and isinstance(v, yaml.SequenceNode)),
                     [])
    out: list[dict[str, int]] = []
    for item in items:
        lines = {"": item.start_mark.line + 1}
        if isinstance(item, yaml.MappingNode):
            for key, value in item.value:
                lines[str(key.value)] = value.start_mark.line + 1
        out.append(lines)
    return out
