"""What the user's input or environment gets wrong ends a command in one line with its exit status, never in a
traceback: numbers and dates past what can be stored, files that cannot be written, invalid settings, and
`simulate` against a service that cannot be reached or refuses the webhook."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.settings import get_settings
from tests.helpers import CALLER

HUGE = "9" * 23


def run(ctx, *args: str, **env: str) -> Result:
    get_settings.cache_clear()  # the command reads this environment, not an earlier test's
    return CliRunner().invoke(main, list(args), env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url, **env})


def one_line_error(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("args", "named"), [
    (("tokens", "revoke", HUGE), "'ID'"),
    (("webhooks", "retry", HUGE), "'ID'"),
    (("audit", "export", "--lead", HUGE), "'--lead'"),
    (("privacy", "purge", "--older-than-days", "99999999999"), "'--older-than-days'"),
    (("report", "--since", "2026-01-01", "--until", "9999-12-31"), "until: '9999-12-31' is out of range"),
    (("audit", "export", "--since", "2026-01-01", "--until", "9999-12-31"), "'--until'"),
])
def test_refuse_number_or_date_out_of_range_in_one_line_naming_it(ctx, args, named) -> None:
    result = run(ctx, *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]  # click's usage lines come first for a bad option value
    assert line.startswith("Error: ")
    assert named in line
    assert result.stdout == ""  # refused before anything is written (no CSV header)


def test_refuse_output_file_that_cannot_be_written_in_one_line(ctx, tmp_path) -> None:
    target = tmp_path / "no-such-folder" / "report.html"
    result = run(ctx, "report", "--format", "html", "--output", str(target))
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: cannot use {target}: No such file or directory"


def test_refuse_unsupported_database_url_naming_setting_without_password(ctx) -> None:
    result = run(ctx, "report", TEXTBACK_DATABASE_URL="mysql://user:s3cret@db.example/textback")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("Error: invalid settings: database_url (TEXTBACK_DATABASE_URL): 'mysql' databases")
    assert "s3cret" not in result.output


def test_fail_simulate_when_service_cannot_be_reached(ctx) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = run(ctx, "simulate", "sms", "--from", CALLER, "--url", f"http://127.0.0.1:{port}", "hello")
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: cannot reach the service at http://127.0.0.1:{port}: ConnectError"


def test_fail_simulate_when_service_refuses_webhook(ctx) -> None:
    result = run(ctx, "simulate", "sms", "--from", CALLER, "--to", "+13105550999", "hello",
                 TEXTBACK_PUBLIC_URL=ctx.settings.public_url)
    assert result.exit_code == 1
    assert "/twilio/sms -> HTTP 404" in result.stdout
    assert result.stderr.strip().endswith("Error: the service refused /twilio/sms (HTTP 404)")


@pytest.mark.parametrize(("args", "message"), [
    (("--port", "99999"), "Invalid value for '--port': 99999 is not in the range 0<=x<=65535."),
    (("--port", "-1"), "Invalid value for '--port': -1 is not in the range 0<=x<=65535."),
    (("--workers", "0"), "Invalid value for '--workers': 0 is not in the range x>=1."),
])
def test_refuse_serve_port_or_workers_out_of_range_before_starting(ctx, args, message) -> None:
    """Refused before anything binds (a port past 65535 was bound modulo 65536, and said otherwise)."""
    result = run(ctx, "serve", *args)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"Error: {message}")
