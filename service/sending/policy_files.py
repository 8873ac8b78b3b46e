"""The schema of the two sending-policy files: quiet-hours windows and their examples, and the caps.

    policies/sending/quiet_hours.yaml   kind: quiet_hours   federal + state windows, opener_is_reply, examples
    policies/sending/caps.yaml          kind: caps          per-lead, per-broker and circuit-breaker limits

Strict models (unknown keys are errors, every model frozen); each file's model extends the policy-file header
(service.policy.files.PolicyFileModel). Times are quoted "HH:MM" strings. What the windows mean at send time
(DST, the most restrictive of federal and state) is service.sending.policy.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from service.policy.files import PolicyFileModel
from service.sending.recipient import US_STATE_CODES

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _parse_hhmm(value: object) -> time:
    # Unquoted 20:00 is the integer 1200 to YAML 1.1 (base 60); insist on quoted "HH:MM" so that cannot slip.
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not _HHMM.match(value):
        msg = f"write times as quoted 24-hour 'HH:MM' strings, got {value!r}"
        raise ValueError(msg)
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


HHMM = Annotated[time, BeforeValidator(_parse_hhmm)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """Texts allowed from `start` (inclusive) to `end` (exclusive), recipient's local wall time."""

    start: HHMM
    end: HHMM

    @model_validator(mode="after")
    def _start_before_end(self) -> Window:
        if self.start >= self.end:
            msg = f"start {self.start:%H:%M} must be before end {self.end:%H:%M}"
            raise ValueError(msg)
        return self


class FederalRule(_Strict):
    citation: str = Field(min_length=1)
    window: Window


class StateRule(_Strict):
    citation: str = Field(min_length=1)
    window: Window
    # Per-weekday overrides: a different window, or "closed" for no automated texts that day.
    days: dict[Weekday, Window | Literal["closed"]] = Field(default_factory=dict)
    note: str | None = None


class QuietHoursExample(_Strict):
    """One self-check: at this local wall time, for this state or phone, is an automated text allowed?"""

    where: str = Field(min_length=2)  # a two-letter state code, or an E.164 phone number
    local: datetime  # naive wall time in the recipient's zone
    allowed: bool
    opener: bool = False
    fallback_tz: str = "America/New_York"  # the broker's zone, used when the phone has no geography

    @field_validator("where")
    @classmethod
    def _state_or_phone(cls, value: str) -> str:
        if value.startswith("+") or value in US_STATE_CODES:
            return value
        msg = f"{value!r} is neither a US state code nor an E.164 number"
        raise ValueError(msg)

    @field_validator("local")
    @classmethod
    def _naive(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            msg = "give the recipient's local wall time without an offset"
            raise ValueError(msg)
        return value

    @field_validator("fallback_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        _zone_or_error(value)
        return value

    @property
    def label(self) -> str:
        verdict = "allowed" if self.allowed else "blocked"
        opener = " opener" if self.opener else ""
        return f"{self.where} {self.local:%a %Y-%m-%dT%H:%M}{opener} {verdict}"


class QuietHoursFile(PolicyFileModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["quiet_hours"]
    opener_is_reply: bool = True
    federal: FederalRule
    states: dict[str, StateRule] = Field(default_factory=dict)
    examples: list[QuietHoursExample] = Field(min_length=1)

    @field_validator("states")
    @classmethod
    def _known_states(cls, value: dict[str, StateRule]) -> dict[str, StateRule]:
        unknown = sorted(code for code in value if code not in US_STATE_CODES)
        if unknown:
            msg = f"not US state codes: {unknown}"
            raise ValueError(msg)
        return value


class Limit(_Strict):
    value: PositiveInt
    title: str = Field(min_length=1)
    rationale: str = Field(min_length=1)


class CapLimits(_Strict):
    per_lead_per_day: Limit
    per_lead_total: Limit
    per_broker_per_day: Limit
    breaker_window_minutes: Limit
    breaker_max_openers: Limit
    breaker_max_openers_per_broker: Limit

    @model_validator(mode="after")
    def _consistent(self) -> CapLimits:
        if self.per_lead_per_day.value > self.per_lead_total.value:
            msg = "per_lead_per_day cannot exceed per_lead_total"
            raise ValueError(msg)
        if self.breaker_max_openers_per_broker.value > self.breaker_max_openers.value:
            msg = "breaker_max_openers_per_broker cannot exceed breaker_max_openers"
            raise ValueError(msg)
        return self


class CapsFile(PolicyFileModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["caps"]
    limits: CapLimits



def _zone_or_error(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown IANA timezone {name!r}"
        raise ValueError(msg) from None
