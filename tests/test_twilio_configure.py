"""`textback twilio configure`: the exact updates sent through the real SDK to a respx-served account (only the
fields that differ), a second run changing nothing, --dry-run posting nothing, and every refusal."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from click.testing import CliRunner

from service.cli import main
from tests.helpers import BROKER, BROKER2, BROKERS_YAML, PUBLIC_URL, TWILIO_SID, TWILIO_TOKEN
from tests.twilio_account import FakeAccount, configured


@pytest.fixture
def account() -> FakeAccount:
    """BROKER still on Twilio's demo webhooks; BROKER2 already set up."""
    fake = FakeAccount()
    fake.add_number(BROKER)
    fake.add_number(BROKER2, **configured(PUBLIC_URL))
    return fake


@pytest.fixture
def twilio(account: FakeAccount):
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        account.install(router)
        yield router


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    monkeypatch.chdir(tmp_path)  # no .env or brokers.yaml of the checkout
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BROKERS_YAML)
    return {"TEXTBACK_BROKERS_FILE": str(brokers), "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
            "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN}


def configure(env: dict[str, str | None], *args: str):
    return CliRunner().invoke(main, ["twilio", "configure", *args], env=env)


def test_configure_sends_only_the_fields_that_differ(env, account, twilio):
    result = configure(env)
    assert result.exit_code == 0, result.output
    assert account.posts == [(BROKER, {
        "VoiceUrl": f"{PUBLIC_URL}/twilio/voice",
        "VoiceFallbackUrl": f"{PUBLIC_URL}/twilio/voice/fallback",
        "StatusCallback": f"{PUBLIC_URL}/twilio/voice/status",
        "SmsUrl": f"{PUBLIC_URL}/twilio/sms",
        "SmsFallbackUrl": f"{PUBLIC_URL}/twilio/sms/fallback",
    })]
    assert result.output.splitlines() == [
        f"{BROKER} voice_url: https://demo.twilio.com/welcome/voice/ -> {PUBLIC_URL}/twilio/voice",
        f"{BROKER} voice_fallback_url: (none) -> {PUBLIC_URL}/twilio/voice/fallback",
        f"{BROKER} status_callback: (none) -> {PUBLIC_URL}/twilio/voice/status",
        f"{BROKER} sms_url: https://demo.twilio.com/welcome/sms/reply -> {PUBLIC_URL}/twilio/sms",
        f"{BROKER} sms_fallback_url: (none) -> {PUBLIC_URL}/twilio/sms/fallback",
        f"{BROKER2} unchanged",
        "twilio configure: 5 field(s) changed on 2 number(s)",
    ]


def test_configure_sets_methods_and_clears_a_twiml_app(env, account, twilio):
    """A GET method and a TwiML App (which makes Twilio ignore the number's URLs) are corrected too."""
    account.numbers[BROKER2].update(sms_method="GET", voice_application_sid="AP" + "2" * 32)
    result = configure(env, "--number", BROKER2)
    assert result.exit_code == 0, result.output
    assert account.posts == [(BROKER2, {"SmsMethod": "POST", "VoiceApplicationSid": ""})]
    assert f"{BROKER2} voice_application_sid: AP{'2' * 32} -> (none)" in result.output


def test_configure_run_twice_changes_nothing_the_second_time(env, account, twilio):
    configure(env)
    posted = len(account.posts)
    result = configure(env)
    assert result.exit_code == 0
    assert len(account.posts) == posted == 1
    assert result.output.splitlines() == [f"{BROKER} unchanged", f"{BROKER2} unchanged",
                                          "twilio configure: 0 field(s) changed on 2 number(s)"]


def test_configure_dry_run_prints_the_plan_and_posts_nothing(env, account, twilio):
    result = configure(env, "--dry-run")
    assert result.exit_code == 0
    assert not twilio["update"].called
    assert f"{BROKER} voice_url: https://demo.twilio.com/welcome/voice/ -> {PUBLIC_URL}/twilio/voice" in result.output
    assert result.output.splitlines()[-1] == "dry run: nothing changed; 5 field(s) on 2 number(s) would change"


def test_configure_only_the_numbers_given(env, account, twilio):
    result = configure(env, "--number", BROKER2)
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"{BROKER2} unchanged"
    assert not account.posts
    assert [call.request.url.params["PhoneNumber"] for call in twilio["numbers"].calls] == [BROKER2]


@pytest.mark.parametrize(("change", "args", "message"), [
    ({"TWILIO_ACCOUNT_SID": None, "TWILIO_AUTH_TOKEN": None}, (),
     "twilio configure: refused: no Twilio credentials (set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"),
    ({"TEXTBACK_PUBLIC_URL": "http://textback.example.com"}, (),
     "twilio configure: refused: TEXTBACK_PUBLIC_URL is http://textback.example.com, not https: set it to the https "
     "address Twilio calls"),
    ({"TEXTBACK_PUBLIC_URL": "https://localhost:8443"}, (),
     "twilio configure: refused: TEXTBACK_PUBLIC_URL is https://localhost:8443: Twilio cannot reach this machine's "
     "own address: set it to the https address Twilio calls"),
    ({}, ("--number", "+14155550177"),
     "twilio configure: refused: +14155550177 is not a broker's twilio_number in {brokers}"),
    ({"TWILIO_AUTH_TOKEN": "wrong-token"}, (),
     "twilio configure: refused: Twilio answered HTTP 401 (error 20003): Authenticate; check TWILIO_ACCOUNT_SID "
     "and TWILIO_AUTH_TOKEN"),
])
def test_configure_refuses_in_one_line_and_changes_nothing(env, account, twilio, change, args, message):
    result = CliRunner().invoke(main, ["twilio", "configure", *args], env={**env, **change})
    assert result.exit_code == 1
    assert result.output.strip() == message.format(brokers=env["TEXTBACK_BROKERS_FILE"])
    assert not twilio["update"].called


def test_configure_refuses_before_any_change_when_a_number_is_not_on_the_account(env, account, twilio):
    del account.numbers[BROKER2]
    result = configure(env)
    assert result.exit_code == 1
    assert result.output.strip() == f"twilio configure: refused: {BROKER2} is not a number of account {TWILIO_SID}"
    assert not twilio["update"].called  # BROKER's changes were planned, not applied


def test_configure_stops_at_a_refused_update_and_prints_only_what_was_changed(env, account, twilio):
    """Twilio refusing the first update (HTTP 400, documented error JSON) stops the run: nothing is claimed."""
    account.numbers[BROKER2].update(sms_method="GET")
    twilio["update"].mock(return_value=httpx.Response(400, json={
        "code": 21402, "message": "VoiceUrl is not valid", "more_info": "https://www.twilio.com/docs/errors/21402",
        "status": 400}))
    result = configure(env)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "twilio configure: refused: Twilio answered HTTP 400 (error 21402): Unable to update record: VoiceUrl is "
        "not valid")
    assert twilio["update"].call_count == 1
