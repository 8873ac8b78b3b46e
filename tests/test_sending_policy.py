"""Loading policies/sending/: caps, and strict schema errors that name the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.sending.policy import Caps, load_sending_policy

POLICIES = Path(__file__).resolve().parent.parent / "policies"


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A scratch copy of policies/sending/ to break on purpose."""
    shutil.copytree(POLICIES / "sending", tmp_path / "sending")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}: the test no longer matches the file"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_load_caps_as_plain_numbers() -> None:
    caps = load_sending_policy(POLICIES).caps
    assert caps == Caps(
        per_lead_per_day=4,
        per_lead_total=6,
        per_broker_per_day=200,
        breaker_window_minutes=10,
        breaker_max_openers=100,
        breaker_max_openers_per_broker=15,
    )


def test_load_policy_from_copy_unchanged(policies_copy: Path) -> None:
    policy = load_sending_policy(policies_copy)
    assert policy.example_findings() == []
    assert policy.quiet_hours_path == policies_copy / "sending" / "quiet_hours.yaml"


@pytest.mark.parametrize(
    ("file", "old", "new", "field", "message"),
    [
        ("quiet_hours.yaml", "opener_is_reply: true", "opener_is_reply: true\ncolour: red", "colour", "unknown key"),
        ("quiet_hours.yaml", "kind: quiet_hours", "kind: caps", "kind", "quiet_hours"),
        ("quiet_hours.yaml", "opener_is_reply: true", "opener_is_reply: maybe", "opener_is_reply", "boolean"),
        ("quiet_hours.yaml", "id: quiet-hours\n", "", "id", "required key is missing"),
        ("quiet_hours.yaml", "title: No automated", "titel: No automated", "titel", "unknown key"),
        ("quiet_hours.yaml", "  FL:\n    citation", "  FL:\n    windw: 1\n    citation", "states.FL.windw", "unknown key"),
        ("quiet_hours.yaml", 'window: {start: "08:00", end: "21:00"}', 'window: {start: "08:00", end: 21:00}',
         "federal.window.end", "HH:MM"),
        ("quiet_hours.yaml", '{start: "09:00", end: "20:00"}', '{start: "20:00", end: "09:00"}',
         "states.CT.window", "must be before"),
        ("quiet_hours.yaml", "  OK:\n", "  ZZ:\n", "states", "ZZ"),
        ("quiet_hours.yaml", "sunday: {start", "sundae: {start", "states.TX.days.sundae", "monday"),
        ("quiet_hours.yaml", 'sunday: {start: "12:00", end: "21:00"}', 'sunday: {start: "12:00", until: "21:00"}',
         "states.TX.days.sunday.until", "unknown key"),
        ("quiet_hours.yaml", '{where: FL, local: "2026-06-10T20:30"', '{where: Florida, local: "2026-06-10T20:30"',
         "examples[0].where", "neither a US state"),
        ("quiet_hours.yaml", '{where: FL, local: "2026-06-10T20:30", allowed: false}',
         '{where: FL, local: "2026-06-10T20:30", allowed: false, expect: 1}', "examples[0].expect", "unknown key"),
        ("quiet_hours.yaml", '{where: FL, local: "2026-06-10T20:30"', '{where: FL, local: "2026-06-10T20:30-04:00"',
         "examples[0].local", "without an offset"),
        ("quiet_hours.yaml", "fallback_tz: America/Chicago}", "fallback_tz: America/Chicgo}",
         "examples[29].fallback_tz", "unknown IANA timezone"),
        ("quiet_hours.yaml", '{where: FL, local: "2026-06-10T20:30", allowed: false}',
         '{where: FL, local: "2026-06-10T20:30", allowed: true}', "examples[0]", "is blocked (window 08:00-20:00)"),
        ("quiet_hours.yaml", "opener_is_reply: true", "opener_is_reply: false", "examples[27]", "is blocked"),
        ("caps.yaml", "kind: caps", "kind: caps\nextra: 1", "extra", "unknown key"),
        ("caps.yaml", "  per_lead_total:", "  per_lead_per_week:\n    value: 9\n  per_lead_total:",
         "limits.per_lead_per_week", "unknown key"),
        ("caps.yaml", "value: 4\n", "value: 0\n", "limits.per_lead_per_day.value", "greater than 0"),
        ("caps.yaml", "value: 200\n", "value: lots\n", "limits.per_broker_per_day.value", "integer"),
        ("caps.yaml", "value: 6\n", "value: 3\n", "limits", "per_lead_per_day cannot exceed per_lead_total"),
        ("caps.yaml", "value: 15\n", "value: 150\n", "limits", "breaker_max_openers_per_broker"),
        ("caps.yaml", "    title: Circuit-breaker window in minutes\n", "", "limits.breaker_window_minutes.title",
         "required key is missing"),
    ],
)  # fmt: skip
def test_reject_policy_file_with_schema_error_naming_file_and_field(
    policies_copy: Path, file: str, old: str, new: str, field: str, message: str
) -> None:
    path = policies_copy / "sending" / file
    _edit(path, old, new)
    with pytest.raises(PolicyError) as caught:
        load_sending_policy(policies_copy)
    assert (caught.value.path, caught.value.field) == (str(path), field)
    assert message in caught.value.message
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("quiet_hours.yaml", "  MA:\n", "  FL:\n", "duplicate key 'FL'"),
        ("quiet_hours.yaml", "federal:\n", "federal: [\n", "not valid YAML"),
        ("caps.yaml", "id: sending-caps\n", "- id: sending-caps\n", "not valid YAML"),
    ],
)
def test_reject_policy_file_unreadable_as_yaml(
    policies_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    path = policies_copy / "sending" / file
    _edit(path, old, new)
    with pytest.raises(PolicyError) as caught:
        load_sending_policy(policies_copy)
    assert caught.value.path == str(path)
    assert message in caught.value.message


@pytest.mark.parametrize("file", ["quiet_hours.yaml", "caps.yaml"])
def test_reject_policy_dir_with_missing_file(policies_copy: Path, file: str) -> None:
    path = policies_copy / "sending" / file
    path.unlink()
    with pytest.raises(PolicyError) as caught:
        load_sending_policy(policies_copy)
    assert (caught.value.path, caught.value.field, caught.value.message) == (
        str(path),
        None,
        "file not found",
    )


def test_reject_policy_file_not_a_mapping(policies_copy: Path) -> None:
    path = policies_copy / "sending" / "caps.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_sending_policy(policies_copy)


def test_list_example_findings_without_refusing_to_load(policies_copy: Path) -> None:
    path = policies_copy / "sending" / "quiet_hours.yaml"
    _edit(
        path,
        '{where: GA, local: "2026-06-10T20:30", allowed: true}',
        '{where: GA, local: "2026-06-10T20:30", allowed: false}',
    )
    _edit(
        path,
        '{where: TX, local: "2026-06-13T11:00", allowed: true}',
        '{where: TX, local: "2026-06-13T11:00", allowed: false}',
    )
    findings = load_sending_policy(policies_copy, check_examples=False).example_findings()
    assert findings == [
        f"{path}: example 'GA Wed 2026-06-10T20:30 blocked' is allowed (window 08:00-21:00)",
        f"{path}: example 'TX Sat 2026-06-13T11:00 blocked' is allowed (window 09:00-21:00)",
    ]
