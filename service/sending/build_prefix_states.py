"""Build service/sending/prefix_states.json, the table service.sending.prefix_states reads instead of importing
phonenumbers' geocoder (~150 MiB of descriptions for 287k prefixes in every language, when recipient_zone only
needs to know whether the English description exists and, for a +1 number, which US state it names).

Run after upgrading phonenumbers (tests/test_prefix_states.py fails until you do):

    uv run python -m service.sending.build_prefix_states

For every prefix with an English description the table holds its class: for +1, the US state code the
description names (service.sending.recipient's rules) or "-" when it names none; elsewhere "-" (only a US
number gets a state); "" for an empty description. Each region's English name gets a class the same way (the
geocoder falls back to it). Then every prefix whose removal changes no lookup is dropped:

- its longest shorter prefix has the same class (1201 "New Jersey" stays, 1201200 "Jersey City, NJ" goes);
- it has no shorter prefix and its class is the country-name fallback's for every number under it (except for
  +1, whose fallback tries the patterns of 25 regions, slower than a lookup): the country code has one region, or only one of its regions can hold a valid number starting with it (checked by partial
  matching of that region's patterns: 612 Sydney cannot be the Cocos Islands'). A number the geocoder describes
  has a type, so it is valid in at least one region, and here exactly one. A region without an English name
  (Ascension AC, Tristan da Cunha TA, Kosovo XK) falls back to no description, so its prefixes stay.

An empty description counts as the fallback (the geocoder falls back to the country name). What is left, a few
thousand prefixes, answers every longest-prefix lookup exactly as the full data would.
"""

from __future__ import annotations

import json
import sys
from typing import TypedDict

import phonenumbers
import regex  # type: ignore[import-untyped]  # installed with dateparser; unlike re, it matches partially
from phonenumbers import geocoder
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.geodata.locale import LOCALE_DATA
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

from service.sending.prefix_states import DESCRIBED_NO_STATE, NANP, NOT_DESCRIBED, TABLE_PATH
from service.sending.recipient import state_from_description

_LANG = "en"
_TYPE_DESCS = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
    "fixed_line", "mobile",
)  # fmt: skip


class TableFile(TypedDict):
    """prefix_states.json: classes map to space-separated region codes and prefixes."""

    phonenumbers: str
    built_by: str
    regions: dict[str, str]
    prefixes: dict[str, str]


def class_of_description(description: str, country_code: int | None) -> str:
    """The table's class of a description: NOT_DESCRIBED, a US state code (+1 only) or DESCRIBED_NO_STATE."""
    if not description:
        return NOT_DESCRIBED
    state = state_from_description(description) if country_code == NANP else None
    return state or DESCRIBED_NO_STATE


def _country_code_of(prefix: str) -> int | None:
    for length in (1, 2, 3):
        if int(prefix[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return int(prefix[:length])
    return None


def _may_start(desc: PhoneNumberDesc | None, digits: str) -> bool:
    """Whether some number matching `desc` could start with `digits` (never False when one could)."""
    pattern = desc.national_number_pattern if desc is not None else None
    return bool(pattern) and regex.fullmatch(pattern, digits, partial=True) is not None


def _may_be_valid(region: str, digits: str) -> bool:
    """Whether a number valid in `region` (phonenumbers' _number_type_helper) could start with these digits."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return False
    return _may_start(metadata.general_desc, digits) and any(
        _may_start(getattr(metadata, kind), digits) for kind in _TYPE_DESCS
    )


def _region_classes() -> dict[str, str]:
    return {
        region: class_of_description(
            geocoder._region_display_name(region, _LANG), phonenumbers.country_code_for_region(region)
        )
        for region in LOCALE_DATA
    }


def _fallback_class(prefix: str, regions: dict[str, str]) -> str | None:
    """The country-name fallback's class when it is the same for every number starting with `prefix`."""
    code = _country_code_of(prefix)
    if code is None:
        return None
    candidates = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    if len(candidates) > 1:
        candidates = tuple(r for r in candidates if _may_be_valid(r, prefix[len(str(code)) :]))
    return regions.get(candidates[0], NOT_DESCRIBED) if len(candidates) == 1 else None


def build() -> TableFile:
    # description_for_number asks for "en" with no script and no region, except after Argentina's mobile
    # token ("en_AR"): only a plain "en" entry can answer, which a locale key like "en_AR" would break.
    odd = {lang for names in GEOCODE_DATA.values() for lang in names if lang.startswith(f"{_LANG}_")}
    if odd:
        raise SystemExit(f"geocoder data has regional English entries {sorted(odd)}: extend the lookup first")
    regions = _region_classes()
    classes = {
        prefix: class_of_description(names[_LANG], _country_code_of(prefix))
        for prefix, names in GEOCODE_DATA.items()
        if _LANG in names
    }
    kept: dict[str, str] = {}
    for prefix, value in classes.items():
        parent = next((prefix[:n] for n in range(len(prefix) - 1, 0, -1) if prefix[:n] in classes), None)
        if parent is not None:
            if value == classes[parent]:
                continue  # the shorter prefix answers the same
        elif value == NOT_DESCRIBED:
            continue  # an empty description falls back to the country name, as finding no prefix does
        elif _country_code_of(prefix) != NANP and _fallback_class(prefix, regions) == value:
            continue  # the country name answers the same for every number here
        kept[prefix] = value  # +1's area codes stay: its fallback tries 25 regions, slower than a lookup
    by_class: dict[str, list[str]] = {}
    for prefix in sorted(kept, key=lambda p: (len(p), p)):
        by_class.setdefault(kept[prefix], []).append(prefix)
    return {
        "phonenumbers": phonenumbers.__version__,
        "built_by": "python -m service.sending.build_prefix_states",
        "regions": {
            v: " ".join(sorted(r for r in regions if regions[r] == v)) for v in sorted(set(regions.values()))
        },
        "prefixes": {v: " ".join(by_class[v]) for v in sorted(by_class)},
    }


def main() -> None:
    table = build()
    TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    count = sum(len(keys.split()) for keys in table["prefixes"].values())
    print(f"{TABLE_PATH.name}: {count} prefixes, phonenumbers {table['phonenumbers']}", file=sys.stderr)


if __name__ == "__main__":
    main()
