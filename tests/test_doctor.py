"""`textback doctor`: each check against a real database, the real policy check, and a Twilio account served by
respx with the API's documented JSON through the real SDK; the checklist's lines and the exit status."""

from __future__ import annotations

import functools
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx
from click.testing import CliRunner
from sqlalchemy import MetaData

from service.cli import main
from service.db import create_schema, make_engine
from service.doctor.core import Check, Status
from service.doctor.local import (
    check_brokers,
    check_database,
    check_llm,
    check_migrations,
    check_policies,
    check_public_url,
)
from service.doctor.run import run_doctor
from service.doctor.twilio_checks import check_a2p, check_account, check_numbers
from service.migrations.baseline import baseline_metadata
from service.migrations.runner import head_revision, upgrade_database
from service.policy import approvals
from service.settings import Settings
from tests.helpers import BROKER, BROKER2, BROKERS_YAML, POLICIES, PUBLIC_URL, TWILIO_SID, TWILIO_TOKEN
from tests.twilio_account import FakeAccount, configured

TWILIO_CHECKS = [check_brokers, check_account, check_numbers, check_a2p]
OPENAI_MODEL_URL = "https://api.openai.com/v1/models/gpt-4o-mini"


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'textback.db'}"
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    return url


@pytest.fixture
def approved_policies(tmp_path: Path) -> Path:
    """A copy of the shipped policies, signed off."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    approvals.approve(target, reviewer="Dana Whitfield, CCO", note=None, now=datetime.now(UTC))
    return target


@pytest.fixture
def env(tmp_path: Path, sqlite_db: str, approved_policies: Path) -> dict[str, str | None]:
    """The environment of a live deployment whose every check passes."""
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BROKERS_YAML)
    return {"TEXTBACK_DATABASE_URL": sqlite_db, "TEXTBACK_BROKERS_FILE": str(brokers),
            "TEXTBACK_POLICIES_DIR": str(approved_policies), "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
            "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "OPENAI_API_KEY": None,
            "OPENAI_BASE_URL": None, "TEXTBACK_REQUIRE_APPROVED_POLICIES": None}


def settings_of(env: dict[str, str | None], **overrides: object) -> Settings:
    names = {"TEXTBACK_DATABASE_URL": "database_url", "TEXTBACK_BROKERS_FILE": "brokers_file",
             "TEXTBACK_POLICIES_DIR": "policies_dir", "TEXTBACK_PUBLIC_URL": "public_url",
             "TWILIO_ACCOUNT_SID": "twilio_account_sid", "TWILIO_AUTH_TOKEN": "twilio_auth_token"}
    values: dict[str, object] = {"openai_api_key": None, **{name: env[key] for key, name in names.items()}}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def account() -> FakeAccount:
    """Both brokers' numbers set up for PUBLIC_URL, in one Messaging Service with a verified campaign."""
    fake = FakeAccount()
    fake.add_number(BROKER, **configured(PUBLIC_URL))
    fake.add_number(BROKER2, **configured(PUBLIC_URL))
    fake.add_service([BROKER, BROKER2])
    return fake


@pytest.fixture
def twilio(account: FakeAccount):
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        account.install(router)
        yield router


def run(env: dict[str, str | None], checks=TWILIO_CHECKS, guard=None, **overrides: object) -> list[Check]:
    return run_doctor(lambda: settings_of(env, **overrides), guard=guard, checks=checks)


def lines_named(lines: list[Check], prefix: str) -> list[Check]:
    return [line for line in lines if line.name.startswith(prefix)]


def invoke(env: dict[str, str | None], output_guard, monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # no .env, no ./brokers.yaml of the checkout
    monkeypatch.setattr("service.commands.doctor.run_doctor", functools.partial(run_doctor, guard=output_guard))
    return CliRunner().invoke(main, ["doctor"], env=env)


def test_doctor_passes_every_check_for_a_configured_deployment(env, twilio, output_guard, monkeypatch, tmp_path):
    """Settings, database, brokers, approved policies, the account, both numbers' webhooks and their verified
    campaign: every line ok, exit 0, and the auth token (in the account's JSON) never printed."""
    result = invoke(env, output_guard, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    body = result.output.splitlines()[:-1]
    assert body
    assert all(line.startswith(("ok ", " ")) for line in body), result.output
    for expected in ("settings: valid; live mode", f"public URL: {PUBLIC_URL}", "all ",
                     "migrations: schema at revision", "policy approval: approved by",
                     f"twilio account: {TWILIO_SID}", f"twilio number {BROKER}: voice, status, messaging",
                     f"twilio number {BROKER2}:", f"A2P 10DLC {BROKER}: Messaging Service textback",
                     "VERIFIED", "LLM: not configured"):
        assert expected in result.output
    assert TWILIO_TOKEN not in result.output
    assert result.output.splitlines()[-1] == "doctor: 13 ok, 0 warning, 0 failed, 0 skipped; nothing failed"


def test_doctor_fails_with_the_credentials_fix_when_twilio_answers_401(env, account, twilio, output_guard,
                                                                        monkeypatch, tmp_path):
    account.token = "another-token"  # what the account's token really is: ours is refused
    result = invoke(env, output_guard, monkeypatch, tmp_path)
    assert result.exit_code == 1
    assert "failed   twilio account: Twilio refused the credentials (HTTP 401, error 20003)" in result.output
    assert "fix: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in result.output
    assert "skipped  twilio number: the Twilio account check failed" in result.output
    assert "skipped  A2P 10DLC: the Twilio account check failed" in result.output
    assert twilio["numbers"].call_count == 0
    assert TWILIO_TOKEN not in result.output


def test_doctor_names_a_broker_number_missing_from_the_account(env, account, twilio):
    del account.numbers[BROKER2]
    lines = run(env)
    [missing] = [line for line in lines if line.status is Status.FAILED]
    assert missing.name == f"twilio number {BROKER2}"
    assert missing.detail == f"not a number of account {TWILIO_SID}"
    assert f"buy or port {BROKER2} into this account" in missing.fix
    assert lines_named(lines, f"A2P 10DLC {BROKER2}")[0].status is Status.SKIPPED
    assert twilio["numbers"].calls[0].request.url.params["PhoneNumber"] == BROKER


def test_doctor_names_each_webhook_that_differs_with_current_and_expected(env, account, twilio):
    account.numbers[BROKER].update(voice_url="https://old.example.com/voice", sms_method="GET",
                                   voice_fallback_url=None, voice_application_sid="AP" + "1" * 32)
    lines = run(env)
    [line] = lines_named(lines, f"twilio number {BROKER}")
    assert line.status is Status.FAILED
    assert line.detail == (
        f"voice_url is https://old.example.com/voice, expected {PUBLIC_URL}/twilio/voice; "
        f"voice_fallback_url is (none), expected {PUBLIC_URL}/twilio/voice/fallback; "
        "sms_method is GET, expected POST; "
        f"voice_application_sid is AP{'1' * 32}, expected (none)")
    assert line.fix == f"textback twilio configure --number {BROKER}"
    assert lines_named(lines, f"twilio number {BROKER2}")[0].status is Status.OK


@pytest.mark.parametrize(("campaign", "status", "words"), [
    ("VERIFIED", Status.OK, "VERIFIED"),
    ("IN_PROGRESS", Status.WARNING, "is IN_PROGRESS: until it is VERIFIED US carriers block its texts (Twilio "
                                    "error 30034"),
    ("FAILED", Status.FAILED, "is FAILED: US carriers block its texts (Twilio error 30034"),
    (None, Status.FAILED, "has no US A2P campaign: US carriers block its texts (Twilio error 30034"),
])
def test_doctor_reads_the_a2p_campaign_of_the_numbers_messaging_service(env, account, twilio, campaign, status,
                                                                       words):
    account.services.clear()
    account.add_service([BROKER, BROKER2], campaign_status=campaign)
    [line] = lines_named(run(env), f"A2P 10DLC {BROKER}")
    assert line.status is status
    assert words in line.detail


def test_doctor_fails_a_us_number_in_no_messaging_service_explaining_30034(env, account, twilio):
    account.senders[account.services[0]["sid"]] = [BROKER2]
    [line] = lines_named(run(env), f"A2P 10DLC {BROKER}")
    assert line.status is Status.FAILED
    assert "in no Messaging Service, so in no A2P campaign" in line.detail
    assert "error 30034" in line.detail
    assert "A2P 10DLC" in line.fix
    assert "Messaging Service" in line.fix


def test_doctor_reports_a_twilio_error_on_a_list_page_as_one_failed_line(env, account, twilio):
    """The SDK raises a bare exception for a list page that is not 200: it reads like any API answer."""
    twilio["services"].mock(return_value=httpx.Response(500, json={
        "code": 20500, "message": "Internal Server Error", "more_info": "https://www.twilio.com/docs/errors/20500",
        "status": 500}))
    [line] = lines_named(run(env), f"A2P 10DLC {BROKER}")
    assert line.status is Status.FAILED
    assert line.detail == "Twilio answered HTTP 500 (error 20500): Internal Server Error"


def test_doctor_fails_a_messaging_service_that_keeps_incoming_texts_from_textback(env, account, twilio):
    """A service that does not defer to the number's webhook posts incoming texts (STOP included) elsewhere."""
    account.services.clear()
    account.add_service([BROKER, BROKER2], inbound_request_url="https://crm.example.com/sms",
                        use_inbound_webhook_on_number=False)
    [line] = lines_named(run(env), f"incoming texts {BROKER}")
    assert line.status is Status.FAILED
    assert f"to https://crm.example.com/sms, not {PUBLIC_URL}/twilio/sms" in line.detail
    assert "Defer to sender's webhook" in line.fix


def test_doctor_skips_a2p_for_a_toll_free_number(env, account, twilio, tmp_path):
    toll_free = "+18885550100"
    brokers = Path(str(env["TEXTBACK_BROKERS_FILE"]))
    brokers.write_text(BROKERS_YAML.replace(BROKER2, toll_free))
    account.add_number(toll_free, **configured(PUBLIC_URL))
    [line] = lines_named(run(env), f"A2P 10DLC {toll_free}")
    assert line.status is Status.SKIPPED
    assert "toll-free verification" in line.detail
    assert "30032" in line.detail


def test_doctor_skips_every_twilio_check_in_dry_run_without_calling_twilio(env, twilio):
    lines = run(env, twilio_account_sid=None, twilio_auth_token=None)
    for name in ("twilio account", "twilio number", "A2P 10DLC"):
        [line] = lines_named(lines, name)
        assert (line.status, line.detail) == (Status.SKIPPED, "dry-run: no credentials")
    assert not twilio.calls


@pytest.mark.parametrize(("public_url", "status"), [
    (PUBLIC_URL, Status.OK),
    ("http://textback.example.com", Status.FAILED),
    ("https://localhost:8000", Status.FAILED),
])
def test_doctor_requires_an_https_public_url_in_live_mode(env, public_url, status):
    [line] = run(env, checks=[check_public_url], public_url=public_url)
    assert line.status is status


@pytest.mark.parametrize(("respond", "status", "words"), [
    (httpx.Response(200, json={"id": "gpt-4o-mini", "object": "model", "created": 1721172741,
                                "owned_by": "system"}), Status.OK, "model gpt-4o-mini available"),
    (httpx.Response(401, json={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                         "param": None, "code": "invalid_api_key"}}), Status.FAILED, "refused the key"),
    (httpx.Response(404, json={"error": {"message": "The model does not exist", "type": "invalid_request_error",
                                         "param": "model", "code": "model_not_found"}}), Status.FAILED,
     "has no model 'gpt-4o-mini'"),
    (httpx.Response(503, json={"error": {"message": "overloaded"}}), Status.FAILED, "answered HTTP 503"),
    (httpx.ConnectError("connection refused"), Status.FAILED, "cannot reach https://api.openai.com/v1 within 5 s"),
])
def test_doctor_checks_the_llm_endpoint_when_a_key_is_set(env, respond, status, words):
    with respx.mock(assert_all_called=True) as router:
        route = router.get(OPENAI_MODEL_URL).mock(side_effect=[respond])
        [line] = run(env, checks=[check_llm], openai_api_key="sk-test-key")
    assert line.status is status
    assert words in line.detail
    assert route.calls[0].request.headers["Authorization"] == "Bearer sk-test-key"


def test_doctor_database_check_passes_on_a_created_schema(database_url, env):
    """SQLite and, when configured, PostgreSQL."""
    engine = make_engine(database_url)
    create_schema(engine)
    engine.dispose()
    [line] = run(env, checks=[check_database], database_url=database_url)
    assert line.status is Status.OK, line.detail
    assert "reachable, all" in line.detail
    assert "tables present" in line.detail


def test_doctor_migrations_check_fails_until_a_pre_migration_database_is_upgraded(database_url, env):
    """A database whose tables were made before migrations (the baseline's tables, no alembic_version) fails
    with the upgrade command; after `upgrade_database` the same check is ok at this release's head."""
    engine = make_engine(database_url)
    present = MetaData()
    present.reflect(engine)
    present.drop_all(engine)  # whatever another fixture made on this database (sqlite_db shares its file)
    baseline_metadata().create_all(engine)
    [database, migrations] = run(env, checks=[check_database, check_migrations], database_url=database_url)
    assert (database.status, database.detail.endswith("reachable, an older textback schema (see migrations)")) == (
        Status.OK, True)
    assert (migrations.status, migrations.detail) == (
        Status.FAILED, f"tables made before migrations (no revision); this release's head is {head_revision()}")
    assert "textback db upgrade" in migrations.fix
    upgrade_database(engine)
    engine.dispose()
    [_, migrations] = run(env, checks=[check_database, check_migrations], database_url=database_url)
    assert (migrations.status, migrations.detail) == (
        Status.OK, f"schema at revision {head_revision()} (this release's head)")


def test_doctor_database_check_names_missing_tables_and_unreachable_servers(env, tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    [line] = run(env, checks=[check_database], database_url=f"sqlite:///{empty}")
    assert (line.status, line.fix) == (
        Status.FAILED, "run `textback db upgrade` (serve does it at start-up): it creates the tables")
    assert "textback tables missing (" in line.detail
    [line] = run(env, checks=[check_database], database_url="postgresql://textback:secret@127.0.0.1:9/textback")
    assert line.status is Status.FAILED
    assert line.detail.startswith("cannot reach postgresql+psycopg://textback:***@127.0.0.1:9/textback:")
    assert "secret" not in line.detail


def test_doctor_policy_approval_is_a_warning_unless_approval_is_required(env, output_guard):
    env = {**env, "TEXTBACK_POLICIES_DIR": str(POLICIES)}
    state = approvals.approval_state(POLICIES)
    if state.approved:
        pytest.skip("the checkout's policy set is approved")
    lines = run(env, checks=[check_policies], guard=output_guard)
    assert [(line.name, line.status) for line in lines] == [("policies", Status.OK),
                                                             ("policy approval", Status.WARNING)]
    lines = run(env, checks=[check_policies], guard=output_guard, require_approved_policies=True)
    assert lines[1].status is Status.FAILED
    assert 'textback policy approve --reviewer "NAME, ROLE"' in lines[1].fix


def test_doctor_exits_1_with_one_line_on_invalid_settings(env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["doctor"], env={**env, "TEXTBACK_PUBLIC_URL": "textback.example.com"})
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "failed   settings: invalid settings: public_url (TEXTBACK_PUBLIC_URL): must start with http:// or https://")


@pytest.mark.parametrize(("status", "kind", "expected", "words"), [
    ("active", "Trial", Status.WARNING, "a trial account: it texts only verified numbers"),
    ("suspended", "Full", Status.FAILED, "is suspended: it cannot send or receive"),
])
def test_doctor_reads_the_account_status_and_type(env, account, twilio, status, kind, expected, words):
    account.status, account.type = status, kind
    lines = run(env)
    [line] = lines_named(lines, "twilio account")
    assert line.status is expected
    assert words in line.detail
    numbers = lines_named(lines, "twilio number")
    assert [n.status for n in numbers] == ([Status.OK, Status.OK] if status == "active" else [Status.SKIPPED])


def test_doctor_exits_0_in_dry_run_with_warnings_and_skipped_twilio_checks(env, output_guard, monkeypatch,
                                                                            tmp_path):
    """Warnings (dry-run, nothing to send with) do not fail the run; no request leaves for Twilio."""
    with respx.mock(assert_all_mocked=True) as router:
        result = invoke({**env, "TWILIO_ACCOUNT_SID": None, "TWILIO_AUTH_TOKEN": None}, output_guard, monkeypatch,
                        tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning  settings: valid; dry-run" in result.output
    assert "skipped  twilio account: dry-run: no credentials" in result.output
    assert result.output.splitlines()[-1] == "doctor: 7 ok, 1 warning, 0 failed, 3 skipped; nothing failed"
    assert not router.calls


def test_doctor_reads_messaging_services_from_the_configured_messaging_url(env, account, twilio):
    """TEXTBACK_TWILIO_MESSAGING_URL points the SDK's messaging.twilio.com requests at a stand-in, like
    TEXTBACK_TWILIO_API_URL does for api.twilio.com."""
    stand_in = twilio.get("https://twilio-stand-in.test/messaging/v1/Services").mock(return_value=httpx.Response(
        200, json={"services": [], "meta": {"page": 0, "page_size": 50, "first_page_url": None, "url": None,
                                            "previous_page_url": None, "next_page_url": None, "key": "services"}}))
    [line] = lines_named(run(env, twilio_messaging_url="https://twilio-stand-in.test/messaging"),
                         f"A2P 10DLC {BROKER}")
    assert "in no Messaging Service" in line.detail
    assert stand_in.call_count == 1
    assert not twilio["services"].called
