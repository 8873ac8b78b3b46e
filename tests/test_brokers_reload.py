"""Brokers file changes take effect without a restart: checked first, applied once, held alike by every process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlmodel import Session, col, select

from service.app import create_app
from service.broker_reload import check_file, poll_brokers, reload_file
from service.broker_set import latest_generation
from service.commands.brokers import applied_lines
from service.context import build_context
from service.db import make_engine
from service.errors import ConfigError
from service.models import Broker, BrokerGeneration
from tests.api_helpers import DIAL, missed
from tests.helpers import BROKER, BROKER2, BROKERS_YAML, POLICIES, call_params, sent_texts

BROKER3 = "+13105550100"  # Lena Park, added by the edit
LENA = """  - twilio_number: "+13105550100"
    name: Lena Park
    brokerage: Coastline Lending
    nmls_id: "778899"
    forward_to: "+13105550111"
    timezone: America/Los_Angeles
"""
# Dana renamed with a new alert number, Marcus removed, Lena added.
EDITED = (BROKERS_YAML.split("  - twilio_number: \"+12125550100\"")[0]
          .replace("name: Dana Whitfield", "name: Dana Whitfield Reyes")
          .replace('alert_to: ["+14155550112"]', 'alert_to: ["+14155550113"]') + LENA)


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"worker_poll_seconds": 0.1}


class Records(logging.Handler):
    """The service's log records of one logger, whatever the process's logging set-up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def broker_logs():
    handler = Records()
    logger = logging.getLogger("textback.brokers")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def generations(ctx) -> list[int]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(BrokerGeneration.generation).order_by(col(BrokerGeneration.generation))))


def active_rows(ctx) -> dict[str, str]:
    with Session(ctx.engine) as session:
        return {b.twilio_number: b.name for b in session.exec(select(Broker).where(col(Broker.active).is_(True)))}


def test_reload_brokers_file_used_by_next_webhook_without_restart(client, post, twilio_api, ctx, brokers_file,
                                                                   output_guard) -> None:
    """A broker added, one removed and one changed by `brokers reload` are in force at the next webhook."""
    brokers_file.write_text(EDITED)
    checked, applied = reload_file(ctx.settings, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    assert applied_lines(checked, applied)[1:] == [
        "+ added Lena Park (+13105550100)",
        "- removed Marcus Chen (+12125550100)",
        "~ changed Dana Whitfield Reyes (+14155550100): alert_to, name",
        "generation 2 applied; running processes take it up at their next poll",
    ]
    assert set(ctx.brokers_by_number) == {BROKER, BROKER2}  # held until this process polls
    client.app.state.worker.run_once()
    assert set(ctx.brokers_by_number) == {BROKER, BROKER3}
    assert ctx.brokers_generation == 2
    assert "+14155550113" in ctx.own_numbers
    assert "+12125550111" not in ctx.own_numbers

    missed(client, post, caller="+14155550198", to=BROKER3)
    missed(client, post, caller="+14155550197", to=BROKER)
    removed = post(client, DIAL, call_params("CA" + "7" * 32, caller="+14155550196", to=BROKER2,
                                             DialCallStatus="no-answer"))
    assert removed.status_code == 404  # as for any number that is no broker's: no lead, no opener
    openers = {(t["From"], t["To"]): t["Body"] for t in sent_texts(twilio_api["messages"])
               if t["To"].startswith("+1415555019")}
    assert set(openers) == {(BROKER3, "+14155550198"), (BROKER, "+14155550197")}
    assert "Lena Park" in openers[(BROKER3, "+14155550198")]
    assert "Dana Whitfield Reyes" in openers[(BROKER, "+14155550197")]


def test_reload_same_file_again_writes_nothing(ctx, output_guard) -> None:
    checked, applied = reload_file(ctx.settings, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    assert not applied.written
    assert applied_lines(checked, applied)[1] == "no change: generation 1 already holds this file"
    assert generations(ctx) == [1]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (('forward_to: "+13105550111"', 'forward_to: "310-555-0111"'), "E.164"),
        (("timezone: America/Los_Angeles\n", "timezone: Pacific\n"), "IANA"),
        (("nmls_id: \"778899\"\n", "nmls_id: \"778899\"\n    booking_url: https://book.example.com/?promo=6%25APR\n"),
         "output guard"),
        (("name: Lena Park", "name: Lena Park 3.5% APR"), "output guard"),
    ],
)
def test_refuse_invalid_brokers_file_keeping_brokers_in_force(ctx, settings, collaborators, brokers_file,
                                                               output_guard, broker_logs, edit, needle) -> None:
    """The command refuses it, each process's watch refuses it once at ERROR, a new process does not start
    with it, and nothing of it (not even its valid changes) replaces the brokers in force."""
    held = ctx.brokers_by_number
    brokers_file.write_text(EDITED[: EDITED.index(LENA)] + LENA.replace(*edit, 1))
    with pytest.raises(ConfigError, match=needle):
        reload_file(ctx.settings, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    assert poll_brokers(ctx) is False
    assert poll_brokers(ctx) is False
    refused = [r for r in broker_logs if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in refused] == ["brokers file refused; the brokers in force stay"]
    assert needle.split()[0] in refused[0].fields["reason"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=needle):
        build_context(settings, **collaborators)
    assert ctx.brokers_by_number is held
    assert generations(ctx) == [1]
    assert active_rows(ctx) == {BROKER: "Dana Whitfield", BROKER2: "Marcus Chen"}


def test_refuse_file_then_apply_its_fix_on_next_poll(ctx, brokers_file, broker_logs) -> None:
    brokers_file.write_text(EDITED.replace("timezone: America/Los_Angeles\n    ", "timezone: Mars/Olympus\n    ", 1))
    assert poll_brokers(ctx) is False
    brokers_file.write_text(EDITED)
    assert poll_brokers(ctx) is True
    assert set(ctx.brokers_by_number) == {BROKER, BROKER3}
    assert [r.getMessage() for r in broker_logs if r.levelno >= logging.INFO] == [
        "brokers file refused; the brokers in force stay", "brokers file applied", "brokers reloaded"]


@pytest.mark.postgres
def test_follow_new_generation_in_every_process_after_one_poll(ctx, second_ctx, tmp_path: Path, output_guard) -> None:
    """Two processes on one database (SQLite, PostgreSQL) both hold what another host applied, from the rows."""
    elsewhere = tmp_path / "elsewhere.yaml"  # the file another host reloaded: this host's file is unchanged
    elsewhere.write_text(EDITED)
    other = ctx.settings.model_copy(update={"brokers_file": elsewhere})
    reload_file(other, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    assert [poll_brokers(ctx), poll_brokers(second_ctx)] == [True, True]
    for held in (ctx, second_ctx):
        assert held.brokers_generation == 2
        assert {n: b.name for n, b in held.brokers_by_number.items()} == {
            BROKER: "Dana Whitfield Reyes", BROKER3: "Lena Park"}
    assert ctx.brokers_by_number[BROKER3].id == second_ctx.brokers_by_number[BROKER3].id
    assert [poll_brokers(ctx), poll_brokers(second_ctx)] == [False, False]
    assert generations(ctx) == [1, 2]


@pytest.mark.postgres
def test_apply_watched_edit_once_across_two_processes(ctx, second_ctx, brokers_file, output_guard) -> None:
    """Both processes see the edit at the same moment: one generation is written, both hold it."""
    brokers_file.write_text(EDITED)
    check_file(brokers_file, output_guard, ctx.templates)  # the shared guard has its verdicts before the race
    start = threading.Barrier(2)
    results: dict[str, bool] = {}

    def poll(name: str, held) -> None:
        start.wait()
        results[name] = poll_brokers(held)

    threads = [threading.Thread(target=poll, args=(name, held)) for name, held in (("a", ctx), ("b", second_ctx))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {"a": True, "b": True}
    assert generations(ctx) == [1, 2]
    latest = latest_generation(ctx.engine)
    assert latest is not None
    assert latest.applied_by.startswith("file watch")
    assert ctx.brokers_generation == second_ctx.brokers_generation == 2
    assert set(ctx.brokers_by_number) == set(second_ctx.brokers_by_number) == {BROKER, BROKER3}


@pytest.mark.postgres
def test_start_process_with_edited_file_moves_running_ones(ctx, settings, collaborators, brokers_file) -> None:
    """A process started with an edited file applies it (checked first); those running follow at their poll."""
    brokers_file.write_text(EDITED)
    settings_off = settings.model_copy(update={"brokers_watch": False})
    ctx.settings = settings_off  # this one only follows the generation
    started = build_context(settings, **collaborators)
    try:
        assert started.brokers_generation == 2
        assert latest_generation(ctx.engine).applied_by.startswith("start-up")  # type: ignore[union-attr]
        assert poll_brokers(ctx) is True
        assert set(ctx.brokers_by_number) == set(started.brokers_by_number) == {BROKER, BROKER3}
    finally:
        started.close()


def test_watch_brokers_file_in_running_app_without_worker_sweep(ctx, brokers_file, twilio_api) -> None:
    """A served app whose sweep runs elsewhere (TEXTBACK_RUN_WORKER=false) still polls: an edit is in force
    within a few polls."""
    assert ctx.settings.run_worker is False
    with TestClient(app=create_app(ctx=ctx), base_url="http://testserver.local"):
        brokers_file.write_text(EDITED)
        deadline = time.monotonic() + 10
        while BROKER3 not in ctx.brokers_by_number and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(ctx.brokers_by_number) == {BROKER, BROKER3}
    assert generations(ctx) == [1, 2]


def textback(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`textback ARGS` in a process of its own, on a SQLite file and the brokers file in `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    env.update({"TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                "TEXTBACK_BROKERS_FILE": str(tmp_path / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(POLICIES),
                "TEXTBACK_GUARD_CACHE_DIR": str(tmp_path / "guard-cache")})
    script = Path(sys.executable).with_name("textback")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
    return subprocess.run([*command, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=110,
                          check=False)


@pytest.mark.slow
def test_brokers_reload_command_refuses_then_applies(tmp_path: Path) -> None:
    """`textback brokers reload`: exit 1 naming the file and line for a bad file (nothing written), exit 0 and
    each broker added for a good one."""
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(EDITED.replace("timezone: America/Los_Angeles\n    ", "timezone: Pacific\n    ", 1))
    refused = textback(tmp_path, "brokers", "reload")
    assert refused.returncode == 1
    assert f"{brokers}:10: brokers[0].timezone: 'Pacific' is not an IANA time zone" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "cli.db").exists()

    brokers.write_text(EDITED)
    no_database = textback(tmp_path, "brokers", "reload")  # never creates or migrates the service's database
    assert no_database.returncode == 1
    assert "textback db upgrade" in no_database.stderr
    assert not (tmp_path / "cli.db").exists()
    assert textback(tmp_path, "db", "upgrade").returncode == 0
    applied = textback(tmp_path, "brokers", "reload")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[1:] == [
        "+ added Dana Whitfield Reyes (+14155550100)",
        "+ added Lena Park (+13105550100)",
        "generation 1 applied; running processes take it up at their next poll",
    ]
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with Session(engine) as session:
            assert sorted(session.exec(select(Broker.name))) == ["Dana Whitfield Reyes", "Lena Park"]
    finally:
        engine.dispose()
