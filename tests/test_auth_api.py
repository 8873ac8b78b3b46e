"""Sign-in by texted code (/api/auth): every route and every refusal, through the real app, database and Twilio SDK."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from service.cli import main
from service.models import LoginCode, OutboundMessage, UserSession, utcnow
from service.signin import CODE_ATTEMPTS
from service.web.auth_api import CODE_ANSWER
from service.web.principal import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from tests.auth_helpers import (
    ADMIN,
    JSON_HEADERS,
    MARCUS_CELL,
    MEMBER,
    STRANGER,
    TEAM_YAML,
    ask_code,
    https_client,
    open_session,
    session_cookie,
    sign_in,
    texted_code,
)
from tests.helpers import BROKER, BROKER2, BROKER_ALERT, BROKER_CELL, sent_texts


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """Dana's broker has a team: an admin of the file and a member."""
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


@pytest.fixture
def web(ctx, twilio_api) -> Iterator[object]:
    """The app over https (its cookies are Secure), the Twilio Messages API mocked at its real URL."""
    with https_client(ctx) as client:
        yield client


def codes(ctx, phone: str) -> list[LoginCode]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(LoginCode).where(LoginCode.phone == phone).order_by(LoginCode.id)))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_ask_code_unknown_phone_same_answer_nothing_sent(web, twilio_api, ctx) -> None:
    """No account enumeration: the answer is the known phone's, a code row is stored alike, no text goes."""
    unknown = ask_code(web, STRANGER)
    known = ask_code(web, BROKER_CELL)
    assert (unknown.status_code, unknown.json()) == (202, CODE_ANSWER)
    assert (known.status_code, known.json()) == (202, CODE_ANSWER)
    assert [t["To"] for t in sent_texts(twilio_api["messages"])] == [BROKER_CELL]
    assert len(codes(ctx, STRANGER)) == 1


def test_ask_code_user_phone_texts_code_from_home_broker(web, twilio_api, ctx) -> None:
    """The code goes through the real Twilio SDK from the user's broker's number; only its HMAC is stored, and
    the stored text forgets it once sent."""
    assert ask_code(web, MARCUS_CELL).status_code == 202
    [text] = sent_texts(twilio_api["messages"])
    assert (text["To"], text["From"]) == (MARCUS_CELL, BROKER2)
    code = texted_code(twilio_api, MARCUS_CELL)
    assert "expires in 10 minutes" in text["Body"]
    [row] = codes(ctx, MARCUS_CELL)
    assert code not in row.code_hash
    assert row.expires_at - row.created_at == timedelta(minutes=10)
    with Session(ctx.engine) as session:
        [stored] = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == MARCUS_CELL)).all()
    assert (stored.purpose, stored.template_id, stored.status) == ("sign_in", "sign_in_code", "sent")
    assert code not in stored.body
    assert "******" in stored.body


def test_sign_in_right_code_sets_cookies_and_answers_user(web, twilio_api) -> None:
    ask_code(web, BROKER_CELL)
    response = open_session(web, BROKER_CELL, texted_code(twilio_api, BROKER_CELL))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {"phone": BROKER_CELL, "name": "Dana Whitfield", "role": "member", "brokers": [BROKER]}
    cookies = {c.split("=", 1)[0]: c.lower() for c in response.headers.get_list("set-cookie")}
    assert "httponly" in cookies[SESSION_COOKIE]
    assert "samesite=lax" in cookies[SESSION_COOKIE]
    assert "secure" in cookies[SESSION_COOKIE]
    assert "secure" in cookies[CSRF_COOKIE]
    assert "httponly" not in cookies[CSRF_COOKIE], "the page's script reads the CSRF token"
    assert web.cookies.get(CSRF_COOKIE) == body["csrf_token"]
    me = web.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json() == {"kind": "session", "user": body["user"], "lead_id": None, "csrf_token": body["csrf_token"]}


@pytest.mark.parametrize(("phone", "role", "brokers"), [
    (ADMIN, "admin", [BROKER2, BROKER]),
    (MEMBER, "member", [BROKER]),
    (BROKER_ALERT, "member", [BROKER]),
])
def test_sign_in_team_phone_role_and_brokers(web, twilio_api, phone, role, brokers) -> None:
    sign_in(web, twilio_api, phone)
    user = web.get("/api/auth/me").json()["user"]
    assert (user["role"], user["brokers"]) == (role, sorted(brokers))


def test_sign_in_http_public_url_cookies_not_secure(ctx, twilio_api, settings) -> None:
    ctx.settings = settings.model_copy(update={"public_url": "http://localhost:8000"})
    with https_client(ctx) as web:
        ask_code(web, BROKER_CELL)
        response = open_session(web, BROKER_CELL, texted_code(twilio_api, BROKER_CELL))
    assert response.status_code == 200
    assert all("secure" not in c.lower() for c in response.headers.get_list("set-cookie"))


def test_sign_in_wrong_code_401_and_counted(web, twilio_api, ctx) -> None:
    ask_code(web, BROKER_CELL)
    response = open_session(web, BROKER_CELL, wrong(texted_code(twilio_api, BROKER_CELL)))
    assert response.status_code == 401
    assert response.json()["error"] == "wrong code"
    assert response.json()["details"] == {"attempts_left": CODE_ATTEMPTS - 1}
    assert [c.attempts for c in codes(ctx, BROKER_CELL)] == [1]
    assert SESSION_COOKIE not in web.cookies


def test_sign_in_five_wrong_attempts_kill_the_code(web, twilio_api) -> None:
    """After 5 wrong attempts the code is dead, even when the right one comes next."""
    ask_code(web, BROKER_CELL)
    code = texted_code(twilio_api, BROKER_CELL)
    answers = [open_session(web, BROKER_CELL, wrong(code)).json()["error"] for _ in range(CODE_ATTEMPTS)]
    assert answers == ["wrong code"] * CODE_ATTEMPTS
    dead = open_session(web, BROKER_CELL, code)
    assert (dead.status_code, dead.json()["error"]) == (401, "too many attempts, request a new code")
    assert SESSION_COOKIE not in web.cookies


def test_sign_in_expired_code_401(web, twilio_api, clock) -> None:
    ask_code(web, BROKER_CELL)
    code = texted_code(twilio_api, BROKER_CELL)
    clock.move_to(utcnow() + timedelta(minutes=10, seconds=1))
    response = open_session(web, BROKER_CELL, code)
    assert (response.status_code, response.json()["error"]) == (401, "code expired, request a new one")


def test_sign_in_code_single_use(web, twilio_api) -> None:
    ask_code(web, BROKER_CELL)
    code = texted_code(twilio_api, BROKER_CELL)
    assert open_session(web, BROKER_CELL, code).status_code == 200
    again = open_session(web, BROKER_CELL, code)
    assert (again.status_code, again.json()["error"]) == (401, "code already used, request a new one")


def test_ask_code_new_code_ends_older_one(web, twilio_api) -> None:
    ask_code(web, BROKER_CELL)
    first = texted_code(twilio_api, BROKER_CELL)
    ask_code(web, BROKER_CELL)
    second = texted_code(twilio_api, BROKER_CELL)
    if first != second:  # one in a million they are the same
        assert open_session(web, BROKER_CELL, first).status_code == 401
    assert open_session(web, BROKER_CELL, second).status_code == 200


@pytest.mark.parametrize("requested", [False, True], ids=["never-requested", "requested"])
def test_sign_in_unknown_phone_wrong_code(web, requested) -> None:
    """A phone that is no user gets the answers a user with a wrong code gets."""
    if requested:
        ask_code(web, STRANGER)
    response = open_session(web, STRANGER, "123456")
    assert (response.status_code, response.json()["error"]) == (401, "wrong code")


@pytest.mark.parametrize("settings_env", [{"signin_codes_per_phone": 2}])
def test_ask_code_over_phone_limit_429_until_window_passes(web, twilio_api, clock, settings_env) -> None:
    assert [ask_code(web, BROKER_CELL).status_code for _ in range(2)] == [202, 202]
    refused = ask_code(web, BROKER_CELL)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "sign-in codes for this phone" in refused.json()["error"]
    assert ask_code(web, STRANGER).status_code == 202, "another phone is not limited"
    assert ask_code(web, STRANGER.replace("77", "78")).status_code == 202
    assert len([t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_CELL]) == 2
    clock.move_to(utcnow() + timedelta(minutes=15, seconds=1))
    assert ask_code(web, BROKER_CELL).status_code == 202


@pytest.mark.parametrize("settings_env", [{"signin_codes_per_address": 3}])
def test_ask_code_over_address_limit_429(web, settings_env) -> None:
    phones = [f"+1415555016{i}" for i in range(4)]
    answers = [ask_code(web, phone) for phone in phones]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert "from this address" in answers[-1].json()["error"]
    assert int(answers[-1].headers["Retry-After"]) > 0


@pytest.mark.parametrize("settings_env", [{"signin_checks_per_address": 2}])
def test_sign_in_over_address_limit_429(web, twilio_api, settings_env) -> None:
    ask_code(web, BROKER_CELL)
    code = texted_code(twilio_api, BROKER_CELL)
    assert [open_session(web, BROKER_CELL, wrong(code)).status_code for _ in range(2)] == [401, 401]
    refused = open_session(web, BROKER_CELL, code)
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers


@pytest.mark.parametrize("path", ["/api/auth/code", "/api/auth/session"])
@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", None,
])
def test_sign_in_routes_not_json_415(web, twilio_api, path, content_type) -> None:
    """What a cross-site form can send is refused before anything is read (the CSRF defence before a session)."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = web.post(path, content=f'{{"phone": "{BROKER_CELL}", "code": "123456"}}', headers=headers)
    assert response.status_code == 415
    assert not twilio_api["messages"].called


@pytest.mark.parametrize(("path", "body", "status", "key"), [
    ("/api/auth/code", '{"phone": "hello"}', 422, "phone"),
    ("/api/auth/code", '{"phone": "+1415"}', 422, "phone"),
    ("/api/auth/code", "{}", 400, "phone"),
    ("/api/auth/code", '{"phone": 4155550111}', 400, "phone"),
    ("/api/auth/code", '{"phone": ', 400, None),
    ("/api/auth/session", f'{{"phone": "{BROKER_CELL}", "code": "12ab56"}}', 422, "code"),
    ("/api/auth/session", f'{{"phone": "{BROKER_CELL}", "code": "1234567"}}', 422, "code"),
    ("/api/auth/session", f'{{"phone": "{BROKER_CELL}"}}', 400, "code"),
])
def test_sign_in_routes_bad_body_names_field(web, path, body, status, key) -> None:
    response = web.post(path, content=body, headers=JSON_HEADERS)
    assert response.status_code == status, response.text
    if key is not None:  # the field is the detail's key, or named in its message (a missing field)
        [detail] = response.json()["details"]
        assert detail["key"] == key or f"`{key}`" in detail["message"], detail
        error = response.json()["error"]
        assert error.startswith(f"{key}: ") if status == 400 else key in error, error
    else:
        assert response.json()["error"] == "the body is not valid JSON (send Content-Type: application/json)"


def test_ask_code_national_format_accepted(web, twilio_api) -> None:
    assert ask_code(web, "(415) 555-0111").status_code == 202
    assert [t["To"] for t in sent_texts(twilio_api["messages"])] == [BROKER_CELL]


def test_me_signed_out_401(web) -> None:
    assert web.get("/api/auth/me").status_code == 401
    assert web.get("/api/auth/me", cookies={SESSION_COOKIE: "made-up"}).status_code == 401


def test_logout_revokes_session_server_side(web, twilio_api, ctx) -> None:
    csrf = sign_in(web, twilio_api, BROKER_CELL)
    cookie = session_cookie(web)
    response = web.post("/api/auth/logout", headers=csrf)
    assert response.status_code == 204
    cleared = response.headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in cleared} == {SESSION_COOKIE, CSRF_COOKIE}
    assert all("max-age=0" in c.lower() for c in cleared)
    with Session(ctx.engine) as session:
        [row] = session.exec(select(UserSession)).all()
    assert row.revoked_at is not None
    web.cookies.clear()
    assert web.get("/api/auth/me", cookies={SESSION_COOKIE: cookie}).status_code == 401, "the old cookie is dead"


@pytest.mark.parametrize("csrf", [None, "wrong-token"])
def test_logout_without_right_csrf_403(web, twilio_api, csrf) -> None:
    sign_in(web, twilio_api, BROKER_CELL)
    headers = {CSRF_HEADER: csrf} if csrf else {}
    assert web.post("/api/auth/logout", headers=headers).status_code == 403
    assert web.get("/api/auth/me").status_code == 200, "still signed in"


def test_logout_form_post_with_csrf_field(web, twilio_api) -> None:
    """The console's plain HTML form carries the token as a field instead of the header."""
    csrf = sign_in(web, twilio_api, BROKER_CELL)[CSRF_HEADER]
    assert web.post("/api/auth/logout", data={"csrf_token": csrf}).status_code == 204
    assert web.get("/api/auth/me").status_code == 401


def test_logout_signed_out_401(web) -> None:
    assert web.post("/api/auth/logout").status_code == 401


def test_sessions_revoke_cli_signs_phone_out_everywhere(ctx, twilio_api) -> None:
    browsers = []
    for phone in (BROKER_CELL, BROKER_CELL, MEMBER):
        with https_client(ctx) as web:
            sign_in(web, twilio_api, phone)
            browsers.append(session_cookie(web))
    result = CliRunner().invoke(main, ["sessions", "revoke", "--phone", BROKER_CELL],
                                env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "revoked 2 sessions of +1********11"
    with https_client(ctx) as web:
        status = [web.get("/api/auth/me", cookies={SESSION_COOKIE: c}).status_code for c in browsers]
    assert status == [401, 401, 200]


def test_sessions_revoke_cli_bad_phone_exit_2(ctx) -> None:
    result = CliRunner().invoke(main, ["sessions", "revoke", "--phone", "nope"],
                                env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})
    assert result.exit_code == 2
    assert "--phone" in result.output


@pytest.mark.parametrize("settings_env", [{"twilio_account_sid": None, "twilio_auth_token": None}])
def test_ask_code_dry_run_prints_code_in_full(web, capsys, settings_env) -> None:
    """On a fresh machine (no Twilio credentials) the code is printed where the texts are, and works."""
    assert ask_code(web, BROKER_CELL).status_code == 202
    [line] = [x for x in capsys.readouterr().out.splitlines() if "(sign_in_code)" in x]
    assert line.startswith(f"[dry-run] text to {BROKER_CELL} from {BROKER} (sign_in_code): textback: your sign-in")
    code = line.split("code is ", 1)[1][:6]
    assert code.isdigit()
    assert open_session(web, BROKER_CELL, code).status_code == 200


def test_sign_in_code_never_logged_live(web, twilio_api, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    ask_code(web, BROKER_CELL)
    code = texted_code(twilio_api, BROKER_CELL)
    assert open_session(web, BROKER_CELL, code).status_code == 200
    captured = capsys.readouterr()
    fields = " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert any(r.getMessage() == "text sent" for r in caplog.records), "the service's logs were captured"
    assert code not in captured.err + captured.out + caplog.text + fields


def test_ask_code_text_rejected_not_escalated(web, twilio_api, ctx) -> None:
    """A code Twilio refuses is not an alert: no resend, no escalation to the operator; a new code is asked."""
    twilio_api["messages"].mock(return_value=httpx.Response(400, json={
        "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}))
    assert ask_code(web, BROKER_CELL).status_code == 202
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboundMessage)).all()
    assert [(r.template_id, r.status) for r in rows] == [("sign_in_code", "failed")]
