"""The geocoder table (service/sending/prefix_states.json) against phonenumbers' geocoder itself: built from the
installed version, rebuilt identically, and answering recipient_zone exactly as the geocoder did, for every NANP
area code with several exchanges, a spread of every prefix the geocoder knows, and the hard cases (shared
country codes, territories, toll-free, Argentina's mobile token, invalid numbers). Also: a worker that imports
recipient_zone does not load the geocoder (~150 MiB).

The geocoder is imported here only (it takes seconds), never by the service.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import phonenumbers
import pytest
from phonenumbers import geocoder
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.phonemetadata import PhoneMetadata

from service.sending import recipient
from service.sending.build_prefix_states import build
from service.sending.prefix_states import TABLE_PATH, Described, described_state, table_version
from service.sending.recipient import recipient_zone, state_from_description

REBUILD = "rebuild it: uv run python -m service.sending.build_prefix_states (then commit prefix_states.json)"

# Hard cases by hand: territories, shared country codes, non-geographic and mobile numbers, Argentina's mobile
# token, numbers with no zone, invalid and unparseable input.
HAND_PICKED = [
    "+14155550100", "+12125550123", "+18504321234", "+18502221234", "+12025550123", "+12065550123",
    "+19075550123", "+12085550123", "+16025550123", "+13105550123", "+12015550123", "+12012001234",
    "+16135550123", "+14165550123", "+16045550123", "+12042001234", "+18675550123",  # Canada
    "+17875550123", "+16712345678", "+13402221234", "+16847331234", "+16702345678",  # PR GU VI AS MP
    "+18005550123", "+18885550123", "+19005550123", "+15005550123", "+18445550123",  # non-geographic
    "+12465550123", "+18765550123", "+14415550123",  # Barbados, Jamaica, Bermuda
    "+442079460000", "+441534123456", "+441481123456", "+441624123456", "+447700900123",  # GB JE GG IM
    "+525512345678", "+5215512345678", "+523312345678",  # Mexico
    "+911123456789", "+919876543210", "+912223456789",  # India
    "+61298765432", "+61891621234", "+61891641234", "+61812345678", "+61412345678",  # AU, Cocos, Christmas
    "+5491123456789", "+541123456789", "+5493515551234",  # Argentina (mobile token 9)
    "+74951234567", "+77172123456", "+390612345678", "+390669812345", "+4779123456", "+4722123456",
    "+358912345678", "+3581812345", "+212522123456", "+212528812345", "+262262123456", "+262269612345",
    "+590590271234", "+599718123", "+2906123", "+80012345678", "+882123456789",
    "+1", "+12", "+1415", "+141555501", "+999123456", "not-a-number", "", "+", "+0123",
]  # fmt: skip
NANP_FIXED_EXCHANGES = ("200", "222", "432", "555", "867", "999")


def _country_code(prefix: str) -> int:
    return next(
        int(prefix[:n]) for n in (1, 2, 3) if int(prefix[:n]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    )


def _digits_under(prefix: str) -> Iterator[str]:
    """E.164 numbers starting with `prefix`: one per national length its regions allow, plus one of 10 digits."""
    code = _country_code(prefix)
    head = prefix[len(str(code)) :]
    lengths: set[int] = {10}
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        if metadata is not None:
            lengths |= set(metadata.general_desc.possible_length)
    for length in sorted(n for n in lengths if n >= len(head)):
        yield f"+{code}{(head + '0123456789' * 2)[:length]}"


def _sample() -> list[str]:
    """Deterministic: every NANP area code with its fixed and (up to 8) geocoded exchanges; every 40th prefix
    the geocoder knows, in order, and the first three of each country code; every prefix kept in the table;
    the hand-picked cases."""
    prefixes = sorted(GEOCODE_DATA)
    nanp_exchanges: dict[str, list[str]] = {}
    per_country: dict[int, list[str]] = {}
    for prefix in prefixes:
        if prefix.startswith("1") and len(prefix) == 7:
            nanp_exchanges.setdefault(prefix[1:4], []).append(prefix[4:])
        per_country.setdefault(_country_code(prefix), []).append(prefix)
    numbers = list(HAND_PICKED)
    for area in range(200, 1000):
        known = nanp_exchanges.get(str(area), [])
        for exchange in (*NANP_FIXED_EXCHANGES, *known[:: max(1, len(known) // 8)][:8]):
            numbers.append(f"+1{area}{exchange}0100")
    kept = [p for keys in json.loads(TABLE_PATH.read_text())["prefixes"].values() for p in keys.split()]
    firsts = [p for group in per_country.values() for p in group[:3]]
    for prefix in sorted({*prefixes[::40], *firsts, *kept}):
        numbers.extend(_digits_under(prefix))
    return numbers


SAMPLE = _sample()


def _parsed(text: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


def _geocoder_described_state(number: phonenumbers.PhoneNumber) -> Described:
    """What recipient_zone derived from the geocoder before the table: any description, and the US state it
    names (recipient_zone reads the state of a number in region US only)."""
    description = geocoder.description_for_number(number, "en")
    return Described(
        described=bool(description), state=state_from_description(description) if description else None
    )


def _geocoder_described_state_nanp(number: phonenumbers.PhoneNumber) -> Described:
    """The same, with the state kept for +1 numbers only, as the table does."""
    described = _geocoder_described_state(number)
    return described if number.country_code == 1 else described._replace(state=None)


def test_build_table_from_installed_phonenumbers_version() -> None:
    assert table_version() == phonenumbers.__version__, (
        f"prefix_states.json was built from phonenumbers {table_version()}, {phonenumbers.__version__} is "
        f"installed: {REBUILD}"
    )


def test_rebuild_table_identical_to_shipped_file() -> None:
    assert build() == json.loads(TABLE_PATH.read_text(encoding="utf-8")), (
        f"prefix_states.json is stale: {REBUILD}"
    )


def test_sample_covers_every_nanp_area_code_and_many_prefixes() -> None:
    assert len(SAMPLE) > 15_000
    assert {n[2:5] for n in SAMPLE if n.startswith("+1") and len(n) == 12} >= {
        str(a) for a in range(200, 1000)
    }


def test_describe_number_as_geocoder_does_for_sample() -> None:
    numbers = [n for n in map(_parsed, SAMPLE) if n is not None]
    differ = [
        (phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164), ours, theirs)
        for n in numbers
        if (ours := described_state(n)) != (theirs := _geocoder_described_state_nanp(n))
    ]
    assert not differ, f"{len(differ)} numbers differ from the geocoder, e.g. {differ[:5]}; {REBUILD}"


def test_resolve_recipient_zone_as_with_geocoder_for_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = [recipient_zone(text, "America/Chicago") for text in SAMPLE]
    monkeypatch.setattr(recipient, "described_state", _geocoder_described_state)
    theirs = [recipient_zone(text, "America/Chicago") for text in SAMPLE]
    differ = [(text, a, b) for text, a, b in zip(SAMPLE, ours, theirs, strict=True) if a != b]
    assert not differ, f"{len(differ)} numbers differ from the geocoder's answer, e.g. {differ[:3]}"
    placed = [z for z in ours if z.source == "area_code"]
    assert len(placed) > 5_000  # the sample reaches the table, not only the fallback
    assert {z.state for z in placed} >= {"CA", "NY", "TX", "FL", "DC", "PR", "GU", "MP", None}


def test_import_recipient_zone_without_loading_geocoder() -> None:
    code = (
        "import sys; from service.sending.recipient import recipient_zone; "
        "assert recipient_zone('+14155550100', 'America/New_York').state == 'CA'; "
        "print(sorted(m for m in sys.modules if m.startswith(('phonenumbers.geocoder', 'phonenumbers.geodata'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
