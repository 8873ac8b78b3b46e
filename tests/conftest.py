"""Shared fixtures. The network guard below makes any attempt to leave the machine a test failure."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo

OUTBOUND_ATTEMPTS: list[str] = []


def _is_local(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text in {"localhost", "", "testserver", "testserver.local"}:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def _address_host(address: object) -> object:
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # AF_UNIX paths are local


def _guarded_connect(self: socket.socket, address: object) -> None:
    host = _address_host(address)
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"connect {address!r}")
        raise OSError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    host = _address_host(address)
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"connect_ex {address!r}")
        raise OSError(f"tests must not reach the network (tried {address!r})")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object):
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"tests must not resolve remote hosts (tried {host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    """Refuse every non-loopback connection and DNS lookup for the whole run."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo


# A weekday afternoon in every US time zone (11:00 in Hawaii, 17:00 in New York): the quiet-hours window is
# open, so a test's outcome never depends on the hour CI happens to run. The clock keeps ticking from there.
# Tests about quiet hours pass their own `now`, or travel elsewhere with the `clock` fixture.
DAYTIME = "2026-06-10T21:00:00+00:00"


@pytest.fixture(autouse=True)
def clock() -> Iterator[object]:
    """The wall clock, pinned to DAYTIME and ticking; `clock.move_to(...)` travels within a test."""
    import time_machine

    with time_machine.travel(DAYTIME, tick=True) as traveller:
        yield traveller


@pytest.fixture
def outbound_attempts():
    """A callable returning the network attempts made so far in this test (each one was refused)."""
    start = len(OUTBOUND_ATTEMPTS)
    return lambda: OUTBOUND_ATTEMPTS[start:]


# ---------------------------------------------------------------------------------------------------------
# The service under test: a real database, the real twilio SDK with only its HTTP boundary mocked (respx).

import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import respx  # noqa: E402

from service.policy.guard import OutputGuard  # noqa: E402 - cheap: guardrails loads in `load`
from tests.helpers import (  # noqa: E402
    BROKERS_YAML,
    MESSAGES_URL,
    POLICIES,
    PUBLIC_URL,
    TWILIO_SID,
    TWILIO_TOKEN,
    twilio_created,
)

POSTGRES_URL = os.environ.get("TEXTBACK_TEST_POSTGRES_URL")
DB_PARAMS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL database of this test run's own, created next to TEXTBACK_TEST_POSTGRES_URL's and dropped
    at the end, so concurrent runs on one server never see each other's tables."""
    if not POSTGRES_URL:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from service.db import normalize_url

    base = make_url(normalize_url(POSTGRES_URL))
    name = f"{base.database or 'textback_test'}_{os.getpid()}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=DB_PARAMS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """A fresh database: a SQLite file always, and PostgreSQL too when TEXTBACK_TEST_POSTGRES_URL is set.

    PostgreSQL's tables are dropped before and after (not emptied: a reused table keeps its statistics and its
    rows' physical order, which change plans and the order of unordered reads)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'textback.db'}"
        return
    from sqlmodel import SQLModel

    from service.db import make_engine

    assert postgres_url is not None
    engine = make_engine(postgres_url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()
    yield postgres_url
    engine = make_engine(postgres_url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def output_guard() -> OutputGuard:
    """The real output guard, built once (importing guardrails takes seconds). It remembers its verdicts as in
    production (service.policy.guard.VerdictCache), so every `ctx` start-up's check of the sample renders costs
    a look-up after the first."""
    return OutputGuard.load(POLICIES)


@pytest.fixture(scope="session")
def reply_rules():
    """The real reply rules from policies/inbound."""
    from service.replies.rules import load_rules

    return load_rules(POLICIES)


@pytest.fixture(scope="session")
def sending_policy():
    """The real quiet hours and caps from policies/sending (frozen), read once instead of in every start-up."""
    # Lazy: the sending policy imports phonenumbers and the hours parser (~0.4 s), which tests without `ctx` never need.
    from service.sending.policy import load_sending_policy

    return load_sending_policy(POLICIES)


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(BROKERS_YAML)
    return path


@pytest.fixture
def settings_env() -> dict[str, object]:
    """Overrides for Settings; tests may change them before `ctx` is built."""
    return {}


@pytest.fixture
def settings(database_url: str, brokers_file: Path, settings_env: dict[str, object], tmp_path: Path):
    from service.settings import Settings

    values: dict[str, object] = {
        "database_url": database_url, "brokers_file": brokers_file, "policies_dir": POLICIES,
        "spool_dir": tmp_path / "spool",
        "public_url": PUBLIC_URL, "twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN,
        "openai_api_key": None, "run_worker": False, "send_retry_base_seconds": 0.0,
        "guard_cache_dir": tmp_path / "guard-cache",
    }
    values.update(settings_env)
    return Settings(_env_file=None, **values)


@pytest.fixture
def collaborators(output_guard, reply_rules, sending_policy) -> dict[str, object]:
    """What `ctx` is built with besides the settings (build_context's keyword arguments): the guard, rules and
    sending policy shared across the run (the guard takes seconds to build). A test's fixture listed before
    `ctx` may add one (`gateway`, `extractor`) or replace one (`sending_policy`)."""
    return {"guard": output_guard, "rules": reply_rules, "sending_policy": sending_policy}


_SHIPPED_TEMPLATES: list[object] = []


def _shipped_templates():
    """policies/templates read once for the run (0.1 s of every `ctx`); never mutated (tests swap a new set in)."""
    if not _SHIPPED_TEMPLATES:
        from service.templates import load_templates

        _SHIPPED_TEMPLATES.append(load_templates(POLICIES))
    return _SHIPPED_TEMPLATES[0]


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at this release's head, made once by the real migrations (service.migrations)
    for `ctx` to copy: migrating each test's fresh file again cost ~30-100 ms of every context."""
    from service.db import make_engine
    from service.migrations.runner import upgrade_database

    path = tmp_path_factory.mktemp("migrated") / "textback.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()  # the last connection closes: the WAL is checkpointed into the file and removed
    return path


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or url.endswith(":memory:"):
        return None  # an in-memory database, or options: left to the migrations
    return Path(url[len(prefix):])


def _context(settings, collaborators, migrated: Path | None = None):
    from service.context import build_context

    target = _sqlite_file(str(settings.database_url)) if migrated is not None else None
    if target is not None and target.parent.is_dir() and not target.exists():
        # Nothing made this test's database yet: start from the migrated copy, which is exactly what the
        # migrations would make here (build_context's upgrade then finds it at head and leaves it).
        shutil.copyfile(migrated, target)
    shared = {"templates": _shipped_templates()} if Path(settings.policies_dir) == POLICIES else {}
    context = build_context(settings, **{**shared, **collaborators})
    yield context
    context.close()


@pytest.fixture
def ctx(settings, collaborators, migrated_sqlite):
    """The application context on a fresh database, with the shared guard and rules."""
    yield from _context(settings, collaborators, migrated_sqlite)


@pytest.fixture
def second_ctx(settings, collaborators):
    """A second, independent context (engine and pool) on the same database as `ctx`, same collaborators."""
    yield from _context(settings, collaborators)


@pytest.fixture
def twilio_api() -> Iterator[respx.MockRouter]:
    """Twilio's REST API at its real URL; the Messages API accepts every send unless a test says otherwise."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.post(MESSAGES_URL, name="messages").mock(side_effect=twilio_created)
        yield router


@pytest.fixture
def client(ctx, twilio_api):
    """A test client for the app on `ctx`; background work runs before each call returns. Logging is set up as
    the process entry points set it up (`textback serve`, service.asgi), so tests see the service's log events."""
    from litestar.testing import TestClient

    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(ctx.settings.log_level)
    app = create_app(ctx=ctx, run_worker=False)
    with TestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest.fixture
def post():
    """Post a webhook signed exactly as Twilio signs it (against the public URL)."""
    from service.twilio.signature import sign

    def _post(client, path: str, params: dict[str, str], *, token: str = TWILIO_TOKEN,
              signature: str | None = None, public_url: str = PUBLIC_URL) -> httpx.Response:
        sig = signature if signature is not None else sign(token=token, url=public_url + path, params=params)
        response = client.post(path, data=params, headers={"X-Twilio-Signature": sig})
        # Like the webhook's own background work, a reply handed to the LLM pool (and the texts it then hands to
        # the send lane) is finished before we return.
        worker = getattr(client.app.state, "worker", None)
        if worker is not None:
            assert worker.wait_idle(60), "follow-up work still running a minute after the webhook"
        return response

    return _post


