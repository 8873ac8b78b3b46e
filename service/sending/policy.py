"""The sending policy: quiet hours in the recipient's local time, and caps. Pure functions over two YAML files.

    policies/sending/quiet_hours.yaml   kind: quiet_hours   federal + state windows, opener_is_reply, examples
    policies/sending/caps.yaml          kind: caps          per-lead, per-broker and circuit-breaker limits
    policies/sending/human.yaml         kind: human_texts   a person's own texts (service.sending.human_policy)
    policies/sending/opt_out.yaml       kind: opt_out       who a STOP stops (service.sending.opt_out_policy)

Both are read by the one strict YAML reader (service.yamlfile, through service.policy.files) into the strict
models of service.sending.policy_files (unknown and duplicate keys are errors); every problem is a
`PolicyError` naming the file, line and field. The quiet-hours examples are run by the loader, so a file whose
examples disagree with its own windows never loads.

Windows are half-open, `[start, end)` in the recipient's wall-clock time: "8 a.m.-9 p.m." allows 08:00:00 and
20:59:59, not 21:00. Wall times are turned into instants with zoneinfo, per date, so a window is right on
both sides of a DST change. A wall time that does not exist (inside a spring-forward gap) opens at the
instant the clocks jump past it; an ambiguous one (repeated in a fall-back hour) means its first occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from service.errors import PolicyError
from service.hours import wall_time_to_utc  # one home for wall clock -> instant (working hours use it too)
from service.policy.files import load_policy_model
from service.sending.human_policy import HumanTextPolicy, load_human_policy
from service.sending.opt_out_policy import OptOutPolicy, Scope, load_opt_out_policy
from service.sending.policy_files import (
    WEEKDAYS,
    CapsFile,
    QuietHoursExample,
    QuietHoursFile,
    StateRule,
    Window,
)
from service.sending.recipient import RecipientZone, recipient_zone

__all__ = [
    "CallingHours",
    "Caps",
    "QuietHours",
    "QuietHoursExample",
    "SendingPolicy",
    "load_sending_policy",
    "wall_time_to_utc",
]

QUIET_HOURS_FILE = Path("sending") / "quiet_hours.yaml"
CAPS_FILE = Path("sending") / "caps.yaml"

_SEARCH_DAYS = 14  # a window must open within two weeks; anything else is a broken policy
_MAX_ZONE_ROUNDS = 32


# --------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Caps:
    """Plain numbers for the send guards; the titles and rationale live in caps.yaml."""

    per_lead_per_day: int
    per_lead_total: int
    per_broker_per_day: int
    breaker_window_minutes: int
    breaker_max_openers: int
    breaker_max_openers_per_broker: int


@dataclass(frozen=True)
class QuietHours:
    """Federal and state windows; `window_for` gives the most restrictive window for a state and date."""

    federal: Window
    states: Mapping[str, StateRule]
    opener_is_reply: bool

    def window_for(self, state: str | None, local_date: date) -> tuple[time, time] | None:
        """The `[start, end)` window on `local_date`: the federal window narrowed by the state's, if any.

        None when no automated text may be sent that day (a state rule says "closed").
        """
        start, end = self.federal.start, self.federal.end
        rule = self.states.get(state.upper()) if state else None
        if rule is not None:
            day = rule.days.get(WEEKDAYS[local_date.weekday()], rule.window)
            if not isinstance(day, Window):  # "closed"
                return None
            start, end = max(start, day.start), min(end, day.end)
        if start >= end:
            return None
        return start, end

    def next_open_in_zone(self, state: str | None, tz: ZoneInfo, at_utc: datetime) -> datetime:
        """`at_utc` when inside the window in `tz`, else the UTC instant the window next opens there."""
        local_day = at_utc.astimezone(tz).date()
        for offset in range(_SEARCH_DAYS + 1):
            day = local_day + timedelta(days=offset)
            window = self.window_for(state, day)
            if window is None:
                continue
            opens, closes = (wall_time_to_utc(day, t, tz) for t in window)
            if at_utc < opens:
                return opens
            if at_utc < closes:
                return at_utc
        msg = f"no sending window for {state or tz.key} within {_SEARCH_DAYS} days"
        raise ValueError(msg)

    def next_open(self, where: RecipientZone, at_utc: datetime) -> datetime:
        """The first instant at or after `at_utc` that is inside the window in every candidate zone."""
        instant = at_utc
        for _ in range(_MAX_ZONE_ROUNDS):
            moved = False
            for tz in where.zones:
                later = self.next_open_in_zone(where.state, tz, instant)
                if later != instant:
                    instant, moved = later, True
            if not moved:
                return instant
        msg = f"the windows of {[z.key for z in where.zones]} never overlap"
        raise ValueError(msg)


@dataclass(frozen=True)
class CallingHours:
    """The recipient's calling hours at one instant, in words for the audit trail (service.sending.verdicts)."""

    where: RecipientZone
    local: datetime  # the instant in the recipient's (westernmost candidate) zone
    window: tuple[time, time] | None  # today's [start, end), None when closed all day
    inside: bool  # inside the window in every candidate zone

    @property
    def span(self) -> str:
        """"08:00-20:00", or "closed today"."""
        return f"{self.window[0]:%H:%M}-{self.window[1]:%H:%M}" if self.window else "closed today"

    @property
    def place(self) -> str:
        """Where the window comes from: "FL by area code", "America/Chicago by area code", "the broker's
        timezone America/Chicago" (a number with no geography)."""
        if self.where.source == "fallback":
            return f"the broker's timezone {self.where.tz.key}"
        return f"{self.where.state or self.where.tz.key} by area code"


def _require_aware(now_utc: datetime) -> datetime:
    if now_utc.tzinfo is None or now_utc.utcoffset() is None:
        msg = "now_utc must be timezone-aware"
        raise ValueError(msg)
    return now_utc


@dataclass(frozen=True)
class SendingPolicy:
    """Quiet hours and caps, loaded from policies/sending/; see `load_sending_policy`."""

    quiet_hours: QuietHours
    caps: Caps
    examples: tuple[QuietHoursExample, ...]
    quiet_hours_path: Path
    caps_path: Path
    human: HumanTextPolicy = field(default_factory=HumanTextPolicy)  # a person's own texts (policies/sending/human.yaml)
    opt_out: OptOutPolicy = field(default_factory=OptOutPolicy)  # who a STOP stops (policies/sending/opt_out.yaml)

    @property
    def opt_out_scope(self) -> Scope:
        """broker | brokerage | all: what every read of the opt-out covers (service.optout_lock.opt_out_state)."""
        return self.opt_out.scope

    def next_allowed_send(
        self, phone_e164: str, now_utc: datetime, fallback_tz: str, *, is_opener: bool
    ) -> datetime:
        """`now_utc` itself when a text may go now; else the UTC instant the recipient's window next opens.

        The opener answering the caller's own call goes at once when `opener_is_reply` is on.
        """
        _require_aware(now_utc)
        if is_opener and self.quiet_hours.opener_is_reply:
            return now_utc
        where = recipient_zone(phone_e164, fallback_tz)
        opens = self.quiet_hours.next_open(where, now_utc)
        return now_utc if opens == now_utc else opens.astimezone(UTC)

    def quiet_hours_reason(self, phone_e164: str, now_utc: datetime, fallback_tz: str) -> str | None:
        """Why a (non-opener) automated text must wait now, e.g. "quiet hours in FL until 08:00 local"; or None."""
        _require_aware(now_utc)
        where = recipient_zone(phone_e164, fallback_tz)
        opens = self.quiet_hours.next_open(where, now_utc)
        if opens == now_utc:
            return None
        local = opens.astimezone(where.tz)
        place = where.state or where.tz.key
        # "until 08:00" reads as today or tomorrow morning; say the day when it is further off.
        day = ""
        if (local.date() - now_utc.astimezone(where.tz).date()).days > 1:
            day = f" on {local:%a %Y-%m-%d}"
        zone = " (broker's timezone)" if where.source == "fallback" else f" ({where.tz.key})"
        return f"quiet hours in {place} until {local:%H:%M} local{day}{zone}"

    def calling_hours(self, phone_e164: str, now_utc: datetime, fallback_tz: str) -> CallingHours:
        """The recipient's window today and whether `now_utc` is inside it: what an allow reason cites."""
        _require_aware(now_utc)
        where = recipient_zone(phone_e164, fallback_tz)
        local = now_utc.astimezone(where.tz)
        window = self.quiet_hours.window_for(where.state, local.date())
        inside = self.quiet_hours.next_open(where, now_utc) == now_utc
        return CallingHours(where=where, local=local, window=window, inside=inside)

    def check_example(self, example: QuietHoursExample) -> str | None:
        """None when the example behaves as the file says; else a finding naming the file and example."""
        local = example.local
        if example.where.startswith("+"):
            where = recipient_zone(example.where, example.fallback_tz)
            now_utc = wall_time_to_utc(local.date(), local.time(), where.tz)
            if example.opener and self.quiet_hours.opener_is_reply:
                allowed = True
            else:
                allowed = self.quiet_hours.next_open(where, now_utc) == now_utc
            detail = f"resolved to {where.state or '-'} {where.tz.key} ({where.source})"
        else:
            window = self.quiet_hours.window_for(example.where, local.date())
            if example.opener and self.quiet_hours.opener_is_reply:
                allowed = True
            else:
                allowed = window is not None and window[0] <= local.time() < window[1]
            shown = f"{window[0]:%H:%M}-{window[1]:%H:%M}" if window else "closed"
            detail = f"window {shown}"
        if allowed == example.allowed:
            return None
        got = "allowed" if allowed else "blocked"
        return f"{self.quiet_hours_path}: example {example.label!r} is {got} ({detail})"

    def example_findings(self) -> list[str]:
        """Each example in quiet_hours.yaml (and opt_out.yaml) that misbehaves; empty when the files agree with
        themselves."""
        findings = [f for f in (self.check_example(e) for e in self.examples) if f is not None]
        return findings + self.opt_out.example_findings()


def load_sending_policy(policies_dir: Path, *, check_examples: bool = True) -> SendingPolicy:
    """Read policies/sending/{quiet_hours,caps}.yaml strictly; raise PolicyError naming the file and field.

    With `check_examples` (the default) a file whose examples misbehave does not load either.
    """
    qh_path = policies_dir / QUIET_HOURS_FILE
    caps_path = policies_dir / CAPS_FILE
    qh = load_policy_model(qh_path, QuietHoursFile)
    caps_file = load_policy_model(caps_path, CapsFile)
    limits = caps_file.limits
    policy = SendingPolicy(
        quiet_hours=QuietHours(
            federal=qh.federal.window,
            states=dict(qh.states),
            opener_is_reply=qh.opener_is_reply,
        ),
        caps=Caps(
            per_lead_per_day=limits.per_lead_per_day.value,
            per_lead_total=limits.per_lead_total.value,
            per_broker_per_day=limits.per_broker_per_day.value,
            breaker_window_minutes=limits.breaker_window_minutes.value,
            breaker_max_openers=limits.breaker_max_openers.value,
            breaker_max_openers_per_broker=limits.breaker_max_openers_per_broker.value,
        ),
        examples=tuple(qh.examples),
        quiet_hours_path=qh_path,
        caps_path=caps_path,
        human=load_human_policy(policies_dir),
        opt_out=load_opt_out_policy(policies_dir),
    )
    if check_examples:
        for index, example in enumerate(policy.examples):
            finding = policy.check_example(example)
            if finding is not None:
                raise PolicyError(str(qh_path), f"examples[{index}]", finding.split(": ", 1)[1])
        for finding in policy.opt_out.example_findings():
            raise PolicyError(str(policy.opt_out.path), "examples", finding.split(": ", 1)[1])
    return policy
