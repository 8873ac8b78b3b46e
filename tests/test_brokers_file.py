"""The brokers file is validated strictly; every error names the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.brokers import load_brokers
from service.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

GOOD = """brokers:
  - twilio_number: "+14155550100"
    name: Dana Whitfield
    brokerage: Summit Home Loans
    nmls_id: "123456"
    forward_to: "+14155550111"
    timezone: America/Los_Angeles
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(text)
    return path


def test_load_brokers_example_file_shipped_with_repo() -> None:
    brokers = load_brokers(REPO / "brokers.example.yaml")
    assert brokers[0].brokerage == "Summit Home Loans"
    assert brokers[0].alert_to == ["+14155550111"]


def test_load_brokers_applies_defaults(tmp_path: Path) -> None:
    [broker] = load_brokers(write(tmp_path, GOOD))
    assert broker.ring_seconds == 18
    assert broker.alert_to == ["+14155550111"]
    assert broker.booking_url is None
    assert broker.mode == "forwarding"


@pytest.mark.parametrize(
    ("edit", "line", "needle"),
    [
        (("    timezone: America/Los_Angeles\n", "    timezone: America/Los_Angeles\n    colour: blue\n"), 8, "unknown key"),
        (('"+14155550111"', '"415-555-0111"'), 6, "E.164"),
        (('"+14155550100"', '"+1415555"'), 2, "E.164"),
        (("America/Los_Angeles", "Mars/Olympus"), 7, "IANA"),
        (('nmls_id: "123456"', 'nmls_id: "NM-1"'), 5, "nmls_id"),
        (("    timezone: America/Los_Angeles\n", "    timezone: America/Los_Angeles\n    ring_seconds: 500\n"), 8, "ring_seconds"),
        (("    timezone: America/Los_Angeles\n", "    timezone: America/Los_Angeles\n    booking_url: http://x.example\n"), 8, "booking_url"),
        (("    timezone: America/Los_Angeles\n", "    timezone: America/Los_Angeles\n    alert_to: [\"12\"]\n"), 8, "alert_to"),
    ],
)
def test_reject_brokers_file_naming_line(tmp_path: Path, edit: tuple[str, str], line: int, needle: str) -> None:
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_brokers(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert needle in message


def test_reject_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="brokerage"):
        load_brokers(write(tmp_path, GOOD.replace("    brokerage: Summit Home Loans\n", "")))


def test_reject_duplicate_twilio_number(tmp_path: Path) -> None:
    body = GOOD + GOOD.split("brokers:\n", 1)[1]
    with pytest.raises(ConfigError, match="more than one broker"):
        load_brokers(write(tmp_path, body))


def test_reject_forward_to_equal_to_twilio_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loop"):
        load_brokers(write(tmp_path, GOOD.replace('"+14155550111"', '"+14155550100"')))


@pytest.mark.parametrize("text", ["", "brokers: 3\n", "- a\n", "brokers: []\nextra: 1\n", "brokers: [\n"])
def test_reject_brokers_file_with_wrong_shape(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_brokers(write(tmp_path, text))


def test_reject_missing_brokers_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_brokers(tmp_path / "nope.yaml")
