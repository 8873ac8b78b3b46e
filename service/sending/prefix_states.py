"""What phonenumbers' English geocoder says about a number, reduced to what recipient_zone uses: whether it
has a description at all, and which US state the description of a +1 number names, without importing the
geocoder.

`from phonenumbers import geocoder` loads the descriptions of 287k prefixes in every language (~150 MiB of RSS
in each worker, seconds to import). prefix_states.json (12 KB, ~70 KB of RSS) holds only the class of the
English description (a state code, "-" for a description naming no state, "" for none) of the ~2,000 prefixes
a lookup needs (a prefix answering like its shorter prefix, or like the country name, is left out) and the
class of each region's English name, built by `python -m service.sending.build_prefix_states` from the
installed phonenumbers (tests/test_prefix_states.py fails when the installed version differs, and checks this
lookup against the geocoder itself). The table loads on first use.

`described_state` follows `geocoder.description_for_number(number, "en")` step for step: a number of unknown
type has no description; a non-geographical type is described by its country name; otherwise the longest
prefix of the E.164 form (Argentina's mobile token "9" removed first) that has an English description, else the
country name. A country code shared by several regions has a country name only when the number is valid in
exactly one of them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberFormat, PhoneNumberType

__all__ = [
    "DESCRIBED_NO_STATE",
    "NANP",
    "NOT_DESCRIBED",
    "TABLE_PATH",
    "Described",
    "described_state",
    "table_version",
]

TABLE_PATH = Path(__file__).with_name("prefix_states.json")
NANP = 1  # the only country code whose numbers can be in region US
NOT_DESCRIBED = ""
DESCRIBED_NO_STATE = "-"


class Described(NamedTuple):
    """Whether the geocoder has an English description of the number, and the US state it names (+1 only)."""

    described: bool
    state: str | None


class _Table(NamedTuple):
    version: str
    regions: dict[str, str]  # region code -> class of its English name
    prefixes: dict[str, str]  # E.164 digits prefix -> class of its English description
    longest: int


@cache
def _table() -> _Table:
    raw = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    regions = {region: value for value, codes in raw["regions"].items() for region in codes.split()}
    prefixes = {prefix: value for value, keys in raw["prefixes"].items() for prefix in keys.split()}
    return _Table(raw["phonenumbers"], regions, prefixes, max(map(len, prefixes), default=0))


def table_version() -> str:
    """The phonenumbers version prefix_states.json was built from."""
    return _table().version


def _country_class(number: PhoneNumber, code: int) -> str:
    """geocoder.country_name_for_number, as a class."""
    regions = phonenumbers.region_codes_for_country_code(code)
    if len(regions) == 1:
        return _table().regions.get(regions[0], NOT_DESCRIBED)
    valid_in = [region for region in regions if phonenumbers.is_valid_number_for_region(number, region)]
    return _table().regions.get(valid_in[0], NOT_DESCRIBED) if len(valid_in) == 1 else NOT_DESCRIBED


def _prefix_class(number: PhoneNumber) -> str:
    """prefix._prefix_description_for_number over the table (longest matching prefix), as a class."""
    digits = phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
    prefixes = _table().prefixes
    for length in range(min(_table().longest, len(digits)), 0, -1):
        value = prefixes.get(digits[:length])
        if value is not None:
            return value
    return NOT_DESCRIBED


def _description_class(number: PhoneNumber) -> str:
    """geocoder.description_for_number(number, "en"), as a class."""
    kind = phonenumbers.number_type(number)
    code = number.country_code
    if kind == PhoneNumberType.UNKNOWN or code is None:  # a number with a type has a country code
        return NOT_DESCRIBED
    if not phonenumbers.is_number_type_geographical(kind, code):
        return _country_class(number, code)
    looked_up = number
    token = phonenumbers.country_mobile_token(code)
    national = phonenumbers.national_significant_number(number)
    if token and national.startswith(token):
        region = phonenumbers.region_code_for_country_code(code)
        try:
            looked_up = phonenumbers.parse(national[len(token) :], region)
        except phonenumbers.NumberParseException:
            looked_up = number
    return _prefix_class(looked_up) or _country_class(number, code)


def described_state(number: PhoneNumber) -> Described:
    """Whether the English geocoder describes `number`, and the US state its description names when the
    country code is +1 (None elsewhere: only a number in region US gets a state from its description)."""
    value = _description_class(number)
    if value == NOT_DESCRIBED:
        return Described(described=False, state=None)
    return Described(described=True, state=None if value == DESCRIBED_NO_STATE else value)
