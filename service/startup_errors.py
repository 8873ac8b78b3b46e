"""Start-up failures a person can act on: the one place `textback serve`, `textback worker` and the ASGI app
(service.asgi) turn an exception raised while starting into one or two lines naming the setting or file and
the fix, then exit 1. The full traceback only with `--debug` (TEXTBACK_DEBUG=1 for the ASGI app).

Before the slow start-up, `preflight` checks what fails most often in a new deployment: the listening port,
live mode's public URL, and the database (retried for `database_wait_seconds`, so a database that is still
starting does not stop the service)."""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from service.db import make_engine
from service.errors import StartupError, TextbackError
from service.settings import SUPPORTED_DATABASES, describe_invalid, public_url_problem

if TYPE_CHECKING:
    from service.settings import Settings

T = TypeVar("T")


def where(url: str) -> str:
    """The database a URL names, for a message: host, port and database, never the user's password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database or '(in memory)'}"
    return f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _reason(exc: BaseException) -> str:
    """The driver's own first line (psycopg and sqlite3 never put the password in it)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    return lines[0].removeprefix("connection failed: ")


def wait_for_database(url: str, *, wait_seconds: float, say: Callable[[str], None]) -> None:
    """Connect once, retrying an unreachable PostgreSQL for up to `wait_seconds` (one line said when it starts
    waiting); StartupError naming TEXTBACK_DATABASE_URL when it never answers."""
    try:
        engine = make_engine(url)  # a SQLite file's folder is made here
    except OSError as exc:
        raise StartupError(f"cannot create the database ({where(url)}, TEXTBACK_DATABASE_URL): {exc.strerror}; "
                           "check that its folder can be made and written") from exc
    started = time.monotonic()
    attempts, delay = 0, 0.5
    try:
        while True:
            attempts += 1
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except OperationalError as exc:
                waited = time.monotonic() - started
                sqlite = make_url(url).get_backend_name() == "sqlite"
                if sqlite or waited + delay > wait_seconds:
                    fix = ("check that its folder exists and is writable" if sqlite else
                           "start PostgreSQL or correct the host, port, user or database in it")
                    tried = "" if attempts == 1 else f" after {attempts} attempts over {waited:.0f} s"
                    raise StartupError(f"cannot connect to the database ({where(url)}, TEXTBACK_DATABASE_URL)"
                                       f"{tried}: {_reason(exc)}; {fix}") from exc
                if attempts == 1:
                    say(f"textback: {where(url)} does not answer ({_reason(exc)}); retrying for up to "
                        f"{wait_seconds:g} s (TEXTBACK_DATABASE_WAIT_SECONDS)")
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
    finally:
        engine.dispose()


def check_port(host: str, port: int) -> None:
    """StartupError naming --port / --host when the address cannot be listened on (in use, privileged...)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        raise StartupError(f"--host {host}: not an address or name of this machine; use 127.0.0.1 or "
                           "0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use (another textback or program "
                                   f"listens there): stop it or choose another --port") from None
            if exc.errno == errno.EACCES:
                raise StartupError(f"--port {port}: not allowed for this user (ports below 1024 need "
                                   "privileges); use --port 8000 behind a proxy") from None
            raise StartupError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


def check_public_url(settings: Settings) -> None:
    """Live mode (Twilio credentials set) needs the https URL Twilio calls: Twilio signs that exact URL, and every
    webhook checked against another one is refused with 403."""
    problem = None if settings.dry_run else public_url_problem(settings.public_url)
    if problem is not None:
        raise StartupError(f"{problem}: live mode (Twilio credentials set) needs the public https URL Twilio calls, "
                           "such as https://textback.example.com: Twilio signs that URL and every webhook is checked "
                           "against it")


def preflight(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """The quick checks before the slow start-up: the port (serve), the public URL, the database."""
    if host is not None and port is not None:
        check_port(host, port)
    check_public_url(settings)
    wait_for_database(settings.database_url, wait_seconds=settings.database_wait_seconds,
                      say=lambda line: click.echo(line, err=True))


def describe(exc: BaseException) -> str:
    """One or two lines for an exception raised while starting: what is wrong, where, and the fix."""
    if isinstance(exc, ValidationError):
        return describe_invalid(exc)
    if isinstance(exc, TextbackError):
        return str(exc)
    if isinstance(exc, ArgumentError):
        return f"TEXTBACK_DATABASE_URL: not a database URL; {SUPPORTED_DATABASES}"
    if isinstance(exc, OperationalError):
        return (f"the database stopped answering during start-up (TEXTBACK_DATABASE_URL): {_reason(exc)}; "
                "check that it is running and reachable")
    if isinstance(exc, SQLAlchemyError):
        return f"database error during start-up (TEXTBACK_DATABASE_URL): {_reason(exc)}"
    if isinstance(exc, OSError):
        name = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{name}: {exc.strerror or exc}; check the path and its permissions"
    return f"start-up failed: {type(exc).__name__}: {_reason(exc)} (run again with --debug for the traceback)"


# uvicorn's exit status for a process that failed before serving: its multi-process supervisor (`serve --workers
# N`) then stops instead of restarting the worker process over and over.
STARTUP_FAILURE = 3


def fail(exc: BaseException, *, status: int = 1) -> None:
    """Say what went wrong in one or two lines on stderr and exit with `status`."""
    click.echo(f"Error: {describe(exc)}", err=True)
    sys.exit(status)


def startup_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a click command callback a `--debug` flag; an exception it raises becomes one or two lines and exit
    status 1 (`--debug`: the traceback instead). Put it under @click.command() and the command's options."""

    @click.option("--debug", is_flag=True, help="Show the full traceback of a start-up failure.")
    @functools.wraps(command)
    def run(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if debug or os.environ.get("TEXTBACK_DEBUG", "").lower() in {"1", "true", "yes"}:
                raise
            fail(exc)
            raise  # not reached: fail exits

    return run


def guarded(build: Callable[[], T]) -> T:
    """`build()` for an entry point without options (service.asgi): a failure is one or two lines on stderr and
    exit status 3 (uvicorn's STARTUP_FAILURE), unless TEXTBACK_DEBUG is set (then the traceback)."""
    try:
        return build()
    except Exception as exc:
        if os.environ.get("TEXTBACK_DEBUG", "").lower() in {"1", "true", "yes"}:
            raise
        fail(exc, status=STARTUP_FAILURE)
        raise  # not reached: fail exits
