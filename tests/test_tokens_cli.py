"""`textback tokens create/list/revoke` through the real command line, then the token on the API as a CRM uses it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from sqlmodel import Session, select

from service.cli import main
from service.models import ApiToken
from tests.auth_helpers import https_client
from tests.helpers import BROKER, BROKER2, CALLER, call_params

DIAL = "/twilio/voice/dial-status"


@pytest.fixture
def web(ctx, twilio_api) -> Iterator[object]:
    with https_client(ctx) as client:
        yield client


def tokens(ctx, *args: str) -> Result:
    return CliRunner().invoke(main, ["tokens", *args], env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})


def create(ctx, broker: str = BROKER, name: str | None = "Jungo") -> str:
    result = tokens(ctx, "create", "--broker", broker, *(["--name", name] if name else []))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_token_printed_once_stored_hashed(ctx) -> None:
    result = tokens(ctx, "create", "--broker", BROKER, "--name", "Jungo")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("tbk_")
    assert len(token) > 40
    assert "shown once" in result.stderr
    with Session(ctx.engine) as session:
        [row] = session.exec(select(ApiToken)).all()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (row.broker_id, row.name) == (ctx.brokers_by_number[BROKER].id, "Jungo")


def test_token_works_on_api_for_its_broker_only(web, post, ctx) -> None:
    for sid, to in (("CA" + "1" * 32, BROKER), ("CA" + "2" * 32, BROKER2)):
        assert post(web, DIAL, call_params(sid, to=to, DialCallStatus="no-answer")).status_code == 200
    token = create(ctx)
    me = web.get("/api/auth/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["kind"] == "token"
    assert me.json()["token"]["name"] == "Jungo"
    assert me.json()["token"]["brokers"] == [BROKER]
    leads = web.get("/api/leads", headers=bearer(token)).json()["leads"]
    assert [(x["broker"], x["phone"]) for x in leads] == [(BROKER, CALLER)]


def test_token_needs_no_csrf(web, ctx) -> None:
    """A browser never sends a bearer token on its own, so an unsafe request with one needs no CSRF token."""
    response = web.post("/api/auth/logout", headers=bearer(create(ctx)))
    assert response.status_code == 400
    assert "textback tokens revoke" in response.json()["error"]


def test_list_tokens_never_shows_them(web, ctx) -> None:
    first, second = create(ctx), create(ctx, BROKER2, name=None)
    assert web.get("/api/auth/me", headers=bearer(first)).status_code == 200
    result = tokens(ctx, "list")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == ["id", "broker", "name", "created", "last_used", "revoked"]
    rows = [line.split("\t") for line in lines]
    assert [r[:3] for r in rows] == [["1", BROKER, "Jungo"], ["2", BROKER2, "-"]]
    assert rows[0][4] != "-", "last used"
    assert rows[1][4:] == ["-", "-"]
    assert first not in result.output
    assert second not in result.output


def test_revoke_token_refused_on_api_next_request(web, ctx) -> None:
    token = create(ctx)
    assert web.get("/api/auth/me", headers=bearer(token)).status_code == 200
    result = tokens(ctx, "revoke", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "revoked token 1"
    assert web.get("/api/auth/me", headers=bearer(token)).status_code == 401
    assert tokens(ctx, "list").stdout.splitlines()[1].split("\t")[5] != "-"


@pytest.mark.parametrize(("args", "message"), [
    (["create", "--broker", "+14155550177"], "no active broker with Twilio number +14155550177"),
    (["create", "--broker", "not-a-number"], "is not a phone number"),
    (["create"], "--broker"),
    (["revoke", "7"], "no token 7"),
    (["revoke", "seven"], "ID"),
])
def test_tokens_cli_bad_input_exit_2(ctx, args, message) -> None:
    result = tokens(ctx, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_token_of_broker_gone_from_file_refused(web, ctx) -> None:
    token = create(ctx)
    del ctx.brokers_by_number[BROKER]
    assert web.get("/api/auth/me", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer tbk_made-up", "tbk_x"])
def test_bad_authorization_header_401(web, ctx, authorization) -> None:
    create(ctx)
    assert web.get("/api/auth/me", headers={"Authorization": authorization}).status_code == 401
