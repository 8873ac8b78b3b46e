"""Start-up failures of `textback serve`, `textback worker` and the ASGI app: one or two lines on stderr naming
the setting or file and the fix, exit status 1, and the traceback only with --debug (TEXTBACK_DEBUG for ASGI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import StartupError
from service.settings import Settings
from service.startup_errors import check_public_url, where
from tests.helpers import BROKERS_YAML, POLICIES, REPO, TWILIO_SID, TWILIO_TOKEN

SECRET = "s3cret-db-pw"  # a database password that must never be printed
LIVE = {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN}


def textback_command() -> list[str]:
    script = Path(sys.executable).with_name("textback")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]


def run(tmp_path: Path, args: list[str], env: dict[str, str], *, brokers: str = BROKERS_YAML,
        command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a textback entry point in a subprocess from an empty directory, with only `env`'s settings."""
    brokers_file = tmp_path / "brokers.yaml"
    brokers_file.write_text(brokers)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    base.update({"TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'textback.db'}",
                 "TEXTBACK_BROKERS_FILE": str(brokers_file), "TEXTBACK_POLICIES_DIR": str(POLICIES),
                 "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), "TEXTBACK_DATABASE_WAIT_SECONDS": "1",
                 "TEXTBACK_SPOOL_DIR": str(tmp_path / "spool"), **env})
    base = {k: v for k, v in base.items() if v != "<unset>"}
    try:
        return subprocess.run([*(command or textback_command()), *args], env=base, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the process started instead of refusing")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# (case id, environment, brokers file text or None for the valid one, fragments stderr must hold)
CASES = [
    ("unparsable-database-url", {"TEXTBACK_DATABASE_URL": "foo"}, None,
     ["TEXTBACK_DATABASE_URL", "not a database URL", "sqlite:///", "postgresql://"]),
    ("unsupported-database", {"TEXTBACK_DATABASE_URL": f"mysql://app:{SECRET}@127.0.0.1/textback"}, None,
     ["TEXTBACK_DATABASE_URL", "'mysql' databases are not supported", "postgresql://"]),
    ("postgres-unreachable", {"TEXTBACK_DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/textback"}, None,
     ["TEXTBACK_DATABASE_URL", "127.0.0.1:1", "retrying for up to 1 s", "attempts", "start PostgreSQL"]),
    ("bad-setting-value", {"TEXTBACK_SEND_MAX_ATTEMPTS": "many"}, None,
     ["TEXTBACK_SEND_MAX_ATTEMPTS", "valid integer"]),
    ("region-not-time-zone", {}, BROKERS_YAML.replace("America/Los_Angeles", "Pacific", 1),
     ["brokers.yaml:", "timezone", "'Pacific' is not an IANA time zone", "America/Los_Angeles", "(broker "]),
    ("missing-brokers-file", {"TEXTBACK_BROKERS_FILE": "nowhere.yaml"}, None,
     ["nowhere.yaml", "TEXTBACK_BROKERS_FILE"]),
    ("brokers-file-is-directory", {"TEXTBACK_BROKERS_FILE": "."}, None, ["is a directory", "TEXTBACK_BROKERS_FILE"]),
    ("brokers-file-not-yaml", {}, "brokers: [\n", ["brokers.yaml:2", "not valid YAML", "TEXTBACK_BROKERS_FILE"]),
    ("live-without-public-url", {**LIVE, "TEXTBACK_PUBLIC_URL": "<unset>"}, None,
     ["TEXTBACK_PUBLIC_URL is not set", "https", "Twilio signs"]),
    ("live-with-http-public-url", {**LIVE, "TEXTBACK_PUBLIC_URL": "http://textback.example.com"}, None,
     ["TEXTBACK_PUBLIC_URL is http://textback.example.com, not https", "Twilio signs"]),
]


def assert_refused(result: subprocess.CompletedProcess[str], fragments: list[str], *, status: int = 1) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert 1 <= len(lines) <= 2, result.stderr
    assert any(line.startswith("Error: ") for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def _brokers(text: str | None) -> str:
    return BROKERS_YAML if text is None else text


@pytest.mark.slow
@pytest.mark.parametrize(("env", "brokers", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_serve_refuses_bad_configuration_in_two_lines(tmp_path: Path, env: dict[str, str], brokers: str | None,
                                                      fragments: list[str]) -> None:
    assert_refused(run(tmp_path, ["serve", "--port", "0"], env, brokers=_brokers(brokers)), fragments)


WORKER_CASES = [c for c in CASES if c[0] in {"postgres-unreachable", "region-not-time-zone", "live-with-http-public-url"}]


@pytest.mark.slow
@pytest.mark.parametrize(("env", "brokers", "fragments"), [c[1:] for c in WORKER_CASES],
                         ids=[c[0] for c in WORKER_CASES])
def test_worker_refuses_bad_configuration_in_two_lines(tmp_path: Path, env: dict[str, str], brokers: str | None,
                                                       fragments: list[str]) -> None:
    assert_refused(run(tmp_path, ["worker"], env, brokers=_brokers(brokers)), fragments)


ASGI_CASES = [c for c in CASES if c[0] in {"unsupported-database", "postgres-unreachable", "live-without-public-url"}]
UVICORN = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--port", "0"]


@pytest.mark.slow
@pytest.mark.parametrize(("env", "brokers", "fragments"), [c[1:] for c in ASGI_CASES], ids=[c[0] for c in ASGI_CASES])
def test_asgi_app_refuses_bad_configuration_in_two_lines(tmp_path: Path, env: dict[str, str], brokers: str | None,
                                                         fragments: list[str]) -> None:
    """`uvicorn service.asgi:app` (what `serve --workers N` runs in each process) says the same, with uvicorn's
    start-up failure status 3 (its supervisor then stops rather than restarting the process forever)."""
    assert_refused(run(tmp_path, [], env, brokers=_brokers(brokers), command=UVICORN), fragments, status=3)


@pytest.mark.slow
def test_serve_refuses_port_in_use_naming_the_option(tmp_path: Path, busy_port: int) -> None:
    result = run(tmp_path, ["serve", "--port", str(busy_port)], {})

    assert_refused(result, [f"port {busy_port} on 127.0.0.1 is already in use", "--port"])


@pytest.mark.slow
@pytest.mark.parametrize("command", [["serve", "--port", "0", "--debug"], ["worker", "--debug"]])
def test_startup_failure_with_debug_shows_traceback(tmp_path: Path, command: list[str]) -> None:
    result = run(tmp_path, command, {"TEXTBACK_DATABASE_URL": "postgresql://app@127.0.0.1:1/textback"})

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "StartupError: cannot connect to the database" in result.stderr


@pytest.mark.slow
def test_brokers_file_failure_with_debug_shows_traceback(tmp_path: Path) -> None:
    """A problem found while building the context (the brokers file) too: one line without --debug (above), the
    traceback with it."""
    result = run(tmp_path, ["serve", "--port", "0", "--debug"], {},
                 brokers=BROKERS_YAML.replace("America/Los_Angeles", "Pacific", 1))

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError" in result.stderr
    assert "'Pacific' is not an IANA time zone" in result.stderr


@pytest.mark.slow
def test_asgi_startup_failure_with_textback_debug_shows_traceback(tmp_path: Path) -> None:
    result = run(tmp_path, [], {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                                "TEXTBACK_DEBUG": "1"}, command=UVICORN)

    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "TEXTBACK_PUBLIC_URL is not set" in result.stderr


@pytest.mark.parametrize(("values", "refused"), [
    ({}, None),  # dry-run keeps the localhost default
    ({"public_url": "http://127.0.0.1:9000"}, None),
    ({**{"twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN}}, "is not set"),
    ({"twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN, "public_url": "http://a.example"},
     "not https"),
    ({"twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN, "public_url": "https://a.example"}, None),
])
def test_check_public_url_refuses_live_mode_without_https(values: dict[str, str], refused: str | None) -> None:
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    if refused is None:
        check_public_url(settings)
    else:
        with pytest.raises(StartupError, match=refused):
            check_public_url(settings)


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://app:{SECRET}@db.internal:6543/textback", "PostgreSQL at db.internal:6543/textback"),
    (f"postgresql+psycopg://app:{SECRET}@db.internal/textback", "PostgreSQL at db.internal:5432/textback"),
    ("sqlite:///var/textback.db", "SQLite file var/textback.db"),
])
def test_where_names_database_without_password(url: str, shown: str) -> None:
    assert where(url) == shown
