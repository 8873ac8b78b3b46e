"""Where a recipient probably is: US state and IANA timezone(s) from the number's prefix, offline.

The data comes from phonenumbers' bundled geocoder and timezone tables (NANP area code, and for many area
codes the exchange too: 850-432 Pensacola is Central, 850-222 Tallahassee is Eastern). The geocoder's part (is
there an English description, which US state does it name) is read from a compact table built from it
(service.sending.prefix_states), so a worker does not hold the geocoder's 150 MiB of descriptions.

How uncertain numbers are resolved (conservatively: never a text earlier or later than the law allows):

- One zone for the prefix: that zone.
- Several zones for the prefix (e.g. 208 Idaho: Mountain and Pacific; 907 Alaska: Anchorage and Adak;
  605/701 the Dakotas): `zones` keeps every candidate and the quiet-hours policy allows a send only when it
  is allowed in *all* of them, i.e. the window opens when it opens in the westernmost zone and closes when it
  closes in the easternmost. `tz` is the westernmost candidate (the zone in which the window opens last), the
  one used to show "until 08:00 local".
- No geography (toll-free 800/833/844/855/866/877/888, premium 900, personal 5XX, the numbers phonenumbers
  maps to every NANP zone or to `Etc/Unknown`, unparseable input): the broker's timezone, `source="fallback"`,
  no state. The broker's own local window is the best guess for a caller who reached a local broker.
- Outside the US (Canada, the UK...): the number's own zone when phonenumbers knows it, with no state, so
  only the federal window applies. US territories (PR, GU, ...) carry their two-letter code as `state`.

The phonenumbers tables are not perfect (an unassigned exchange may inherit its area code's majority zone);
that is the price of staying offline, and the policy's federal window still applies everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from service.sending.prefix_states import described_state

__all__ = ["US_STATE_CODES", "RecipientZone", "recipient_zone", "state_from_description"]

_STATE_NAMES: dict[str, str] = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington": "WA", "Washington State": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Washington D.C.": "DC", "District of Columbia": "DC",
}  # fmt: skip
_TERRITORIES = frozenset({"PR", "GU", "VI", "AS", "MP"})
US_STATE_CODES: frozenset[str] = frozenset(_STATE_NAMES.values()) | _TERRITORIES

_NON_GEOGRAPHIC = frozenset({
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.UAN,
    phonenumbers.PhoneNumberType.VOICEMAIL,
    phonenumbers.PhoneNumberType.PAGER,
})  # fmt: skip
# A prefix that phonenumbers maps to more zones than this is not a place (toll-free maps to 42).
_MAX_CANDIDATE_ZONES = 3
# Numbers whose zone is kept (a RecipientZone is shared; ~16k callers is ~4 MiB at most).
RECIPIENT_CACHE_SIZE = 16384
_REFERENCE_INSTANT = datetime(2026, 1, 15, 12, tzinfo=UTC)  # standard time everywhere in North America


@dataclass(frozen=True)
class RecipientZone:
    """The recipient's timezone (`tz`, the westernmost candidate) and US state, and where they came from."""

    tz: ZoneInfo
    state: str | None
    source: Literal["area_code", "fallback"]
    zones: tuple[ZoneInfo, ...] = ()

    def __post_init__(self) -> None:
        if not self.zones:
            object.__setattr__(self, "zones", (self.tz,))


def state_from_description(description: str) -> str | None:
    """'Florida' -> FL, 'Miami, FL' -> FL, 'Washington D.C.' -> DC; None when it names no US state."""
    if description in _STATE_NAMES:
        return _STATE_NAMES[description]
    tail = description.rsplit(", ", 1)[-1].strip()
    if tail in US_STATE_CODES:
        return tail
    return _STATE_NAMES.get(tail)


def _westernmost_first(zones: list[ZoneInfo]) -> tuple[ZoneInfo, ...]:
    def offset(zone: ZoneInfo) -> float:
        delta = _REFERENCE_INSTANT.astimezone(zone).utcoffset()
        return delta.total_seconds() if delta is not None else 0.0

    return tuple(sorted(zones, key=lambda z: (offset(z), z.key)))


@lru_cache(maxsize=RECIPIENT_CACHE_SIZE)
def recipient_zone(phone_e164: str, fallback_tz: str) -> RecipientZone:
    """Derive the recipient's timezone and US state from the number; see the module docstring for the rules.

    Kept per (number, fallback) for the process's life: the answer depends on nothing else (the tables ship
    with phonenumbers), and a missed call asks for it three times (the opener's wording, the queue-time and the
    send-time quiet hours), ~60 µs each uncached.

    `fallback_tz` (the broker's IANA timezone) must be a valid zone name: a misconfigured broker is an error,
    not a silent UTC.
    """
    fallback = RecipientZone(tz=ZoneInfo(fallback_tz), state=None, source="fallback")
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return fallback
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) in _NON_GEOGRAPHIC:
        return fallback
    geo = described_state(number)
    names = [n for n in pn_timezone.time_zones_for_number(number) if n != pn_timezone.UNKNOWN_TIMEZONE]
    if not geo.described or not names or len(names) > _MAX_CANDIDATE_ZONES:
        return fallback
    try:
        zones = _westernmost_first([ZoneInfo(name) for name in names])
    except ZoneInfoNotFoundError:
        return fallback
    region = phonenumbers.region_code_for_number(number)
    if region == "US":
        state = geo.state
    elif region in _TERRITORIES:
        state = region
    else:
        state = None
    return RecipientZone(tz=zones[0], state=state, source="area_code", zones=zones)
