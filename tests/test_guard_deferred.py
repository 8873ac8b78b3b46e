"""A restart serves before guardrails has loaded: start-up's checks answered from the verdicts the last start kept.

The Guard's background build is held on a gate here, so "before it loaded" is a fact of the test, not a race.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import GuardNotReady
from service.policy import verdict_file
from service.policy.guard import OutputGuard
from service.policy.selftest import self_test_key
from service.policy.verdicts import GUARD_ERROR
from tests.test_guard import OPENER, POLICIES, REQUIRED

RATE_QUOTE = "Good news: rates are 5.99% APR today, lock it in."


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Open at first; cleared by a test, it holds every Guard build (the background load's included) until set."""
    release = threading.Event()
    release.set()
    original = OutputGuard.from_rules.__func__  # type: ignore[attr-defined]

    def from_rules(cls: type[OutputGuard], rules: Any, version: str, policies_dir: Path) -> OutputGuard:
        assert release.wait(60), "the test never released the guard's build"
        return original(cls, rules, version, policies_dir)  # type: ignore[no-any-return]

    monkeypatch.setattr(OutputGuard, "from_rules", classmethod(from_rules))
    yield release
    release.set()


def first_start(cache: Path, *texts: tuple[str, dict[str, str] | None, str | None]) -> OutputGuard:
    """A start with an empty cache: the Guard loads first; the texts are start-up's checks, kept for the next."""
    guard = OutputGuard.load(POLICIES, cache_dir=cache)
    with guard.startup_checks():
        for text, required, template in texts:
            guard.check(text, required=required, template=template)
    return guard


def in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(result=call()), daemon=True)
    thread.start()
    return thread, box


def test_restart_answers_kept_startup_check_before_guard_loads(tmp_path: Path, gate: threading.Event) -> None:
    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    gate.clear()
    restarted = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True)
    assert restarted.state == "loading"
    with restarted.startup_checks():
        kept = restarted.check(OPENER, required=REQUIRED, template="opener")
    assert kept.allowed
    assert kept.violations == []
    assert restarted.state == "loading"  # answered while the Guard's build is still held
    gate.set()
    assert restarted.wait_loaded(60)
    assert restarted.state == "ok"
    assert restarted.check(OPENER, required=REQUIRED, template="opener").allowed


@pytest.mark.parametrize("text", [OPENER, RATE_QUOTE])
def test_check_text_outside_startup_waits_for_deferred_guard(
    tmp_path: Path, gate: threading.Event, text: str,
) -> None:
    """A text queued for a person is never answered from the file, even one start-up kept (the opener): it
    waits for the Guard, which then gives its own verdict."""
    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    gate.clear()
    restarted = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True)
    thread, box = in_thread(lambda: restarted.check(text, required=REQUIRED, template="opener"))
    thread.join(0.5)
    assert thread.is_alive()
    assert "result" not in box
    gate.set()
    thread.join(60)
    result = box["result"]
    assert result.allowed is (text == OPENER)
    assert GUARD_ERROR not in {v.rule for v in result.violations}
    if text == RATE_QUOTE:
        assert result.violations


def test_guard_load_too_slow_fails_and_check_not_ready(
    tmp_path: Path, gate: threading.Event, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Guard that does not load within GUARD_LOAD_WAIT_SECONDS fails the guard (the watchdog): a check raises
    GuardNotReady (503; nothing stored, the work tried again), `on_failure` is called, the file is removed, and a
    build finishing later changes nothing."""
    import service.policy.guard as guard_module

    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    monkeypatch.setattr(guard_module, "GUARD_LOAD_WAIT_SECONDS", 0.2)
    failures: list[str] = []
    gate.clear()
    restarted = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True, on_failure=failures.append)
    with pytest.raises(GuardNotReady) as refused:
        restarted.check(OPENER, required=REQUIRED, template="opener")
    assert refused.value.status_code == 503
    assert restarted.state == "failed"
    assert failures == ["the output guard did not load within 0.2 s"]
    assert not verdict_file.path_for(tmp_path, self_test_key(POLICIES)).exists()
    gate.set()
    time.sleep(0.5)  # the held build, released, finds the guard failed and leaves it so
    assert restarted.state == "failed"
    with pytest.raises(GuardNotReady):
        restarted.check(OPENER, required=REQUIRED, template="opener")


def test_kept_verdict_altered_fails_guard_when_it_loads(
    tmp_path: Path, gate: threading.Event, caplog: pytest.LogCaptureFixture,
) -> None:
    """A kept verdict the Guard disagrees with (an altered or stale file) answers start-up's check only until
    the Guard has loaded: then the guard fails (no verdict for any text, `on_failure` called: serve stops), an error
    is logged and the file is removed, so the next start loads the Guard first."""
    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    key = self_test_key(POLICIES)
    version = OutputGuard.load(POLICIES, cache_dir=tmp_path).policy_version
    altered = {verdict_file.digest("opener", RATE_QUOTE, None): {"allowed": True, "violations": [], "warnings": []}}
    verdict_file.write(tmp_path, key, version, altered)
    failures: list[str] = []
    gate.clear()
    restarted = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True, on_failure=failures.append)
    with restarted.startup_checks():
        assert restarted.check(RATE_QUOTE, template="opener").allowed  # the file's word, for start-up's check
    with caplog.at_level(logging.ERROR, logger="textback.policy"):
        gate.set()
        assert restarted.wait_loaded(60)
    assert restarted.state == "failed"
    assert len(failures) == 1
    assert "disagreed" in failures[0]
    for text, required in ((RATE_QUOTE, None), (OPENER, REQUIRED)):
        with pytest.raises(GuardNotReady):
            restarted.check(text, required=required, template="opener")
    assert "a kept guard verdict disagreed with the guard" in caplog.text
    assert RATE_QUOTE not in caplog.text
    assert not verdict_file.path_for(tmp_path, key).exists()


def test_deferred_guard_load_failure_gives_no_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A Guard that fails to build in the background fails closed: from then on no text gets a verdict (each
    check raises GuardNotReady, so nothing is stored and the work is tried again), the kept file is removed,
    `on_failure` is called and the guard says `failed` (which /ready reports)."""
    first_start(tmp_path, (OPENER, REQUIRED, "opener"))

    def broken(cls: type[OutputGuard], *args: Any) -> OutputGuard:
        raise RuntimeError("guardrails would not import")

    monkeypatch.setattr(OutputGuard, "from_rules", classmethod(broken))
    failures: list[str] = []
    with caplog.at_level(logging.ERROR, logger="textback.policy"):
        restarted = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True, on_failure=failures.append)
        assert restarted.wait_loaded(60)
    assert restarted.state == "failed"
    assert failures == [restarted.load_error]
    assert "output guard failed" in caplog.text
    for text, required in ((OPENER, REQUIRED), ("Thanks, talk soon.", None)):
        with pytest.raises(GuardNotReady):
            restarted.check(text, required=required, template="opener" if required else None)
    assert not verdict_file.path_for(tmp_path, self_test_key(POLICIES)).exists()  # the next start loads first


def test_refuse_serving_on_guard_failed_after_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` and `worker` end with the guard's reason (exit 1) once their guard has failed after start-up."""
    from types import SimpleNamespace

    from service.commands.serve import _refuse_failed_guard
    from service.errors import PolicyError

    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    monkeypatch.setattr(OutputGuard, "from_rules",
                        classmethod(lambda cls, *args: (_ for _ in ()).throw(RuntimeError("no guardrails"))))
    failed = OutputGuard.load(POLICIES, cache_dir=tmp_path, defer=True)
    assert failed.wait_loaded(60)
    ctx = SimpleNamespace(_guard=failed, settings=SimpleNamespace(policies_dir=POLICIES))
    with pytest.raises(PolicyError, match="no guardrails"):
        _refuse_failed_guard(ctx)


def test_ready_reports_output_guard_loading_then_failed(
    settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/ready says `loading` (still ready: kept texts are answered, others wait) and, once the background build
    has failed, `failed` with a 503, so a load balancer takes the process out."""
    from litestar.testing import TestClient

    from service.app import create_app
    from service.context import build_context

    first = build_context(settings)
    try:
        first.warm_up()
    finally:
        first.close()
    release = threading.Event()

    def broken(cls: type[OutputGuard], *args: Any) -> OutputGuard:
        release.wait(60)
        raise RuntimeError("guardrails would not import")

    monkeypatch.setattr(OutputGuard, "from_rules", classmethod(broken))
    second = build_context(settings)
    try:
        with TestClient(app=create_app(settings, ctx=second)) as client:
            loading = client.get("/ready")
            assert loading.status_code == 200, loading.text
            assert loading.json()["checks"]["output_guard"] == "loading"
            release.set()
            assert second.guard.wait_loaded(60)
            failed = client.get("/ready")
        assert failed.status_code == 503
        assert failed.json()["checks"]["output_guard"] == "failed"
    finally:
        release.set()
        second.close()


def test_restart_context_warm_up_done_before_guard_loads(settings: Any, gate: threading.Event) -> None:
    """The whole start-up check (every template with sample data, every broker value) is answered from the
    verdicts the first start kept: the second context warms up with the Guard's build still held."""
    from service.context import build_context

    first = build_context(settings)
    try:
        gate.set()
        first.warm_up()
        assert first.guard_state() == "ok"
    finally:
        first.close()
    gate.clear()
    second = build_context(settings)
    try:
        thread, box = in_thread(lambda: second.warm_up() or "warm")
        thread.join(60)
        assert box.get("result") == "warm"
        assert second.guard_state() == "loading"
        # What a request that may queue a text (and the sweep) does first: wait, outside any transaction.
        waiting, waited = in_thread(second.wait_for_guard)
        waiting.join(0.3)
        assert waiting.is_alive()
        gate.set()
        waiting.join(60)
        assert waited.get("result") is True  # the guard can give verdicts now
        assert second.guard.wait_loaded(60)
        assert second.guard_state() == "ok"
    finally:
        gate.set()
        second.close()


def test_startup_verdicts_file_holds_no_text(tmp_path: Path) -> None:
    first_start(tmp_path, (OPENER, REQUIRED, "opener"))
    written = verdict_file.path_for(tmp_path, self_test_key(POLICIES)).read_text(encoding="utf-8")
    for words in ("Harbor", "Dana", "1234567", "missed your call"):
        assert words not in written
    assert len(json.loads(written)["verdicts"]) == 1


def test_startup_checks_that_fail_keep_nothing(tmp_path: Path) -> None:
    guard = OutputGuard.load(POLICIES, cache_dir=tmp_path)

    def start_up() -> None:
        with guard.startup_checks():
            guard.check(OPENER, required=REQUIRED, template="opener")
            raise RuntimeError("a template the guard refuses")

    with pytest.raises(RuntimeError):
        start_up()
    assert not verdict_file.path_for(tmp_path, self_test_key(POLICIES)).exists()


GOOD = {"allowed": True, "violations": [], "warnings": []}
BLOCKED = {"allowed": False, "violations": [["rate-quote", "5.99%"]], "warnings": []}


@pytest.mark.parametrize(("record", "readable"), [
    ({"key": "K", "policy_version": "V", "verdicts": {"a" * 64: GOOD, "b" * 64: BLOCKED}}, True),
    ({"key": "other", "policy_version": "V", "verdicts": {"a" * 64: GOOD}}, False),
    ({"key": "K", "policy_version": "other", "verdicts": {"a" * 64: GOOD}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": {"a" * 64: {**GOOD, "violations": [["x", "y"]]}}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": {"a" * 64: {**BLOCKED, "violations": []}}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": {"a" * 64: {**GOOD, "allowed": "yes"}}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": {"short": GOOD}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": {"a" * 64: {**GOOD, "warnings": [["only-one"]]}}}, False),
    ({"key": "K", "policy_version": "V", "verdicts": []}, False),
    ([], False),
])
def test_read_verdict_file_accepts_only_a_well_formed_record(tmp_path: Path, record: object, readable: bool) -> None:
    verdict_file.path_for(tmp_path, "K").write_text(json.dumps(record), encoding="utf-8")
    assert (verdict_file.read(tmp_path, "K", "V") is not None) is readable


def test_read_verdict_file_not_json_ignored(tmp_path: Path) -> None:
    verdict_file.path_for(tmp_path, "K").write_text("{not json", encoding="utf-8")
    assert verdict_file.read(tmp_path, "K", "V") is None


RESTART = """
import json, sys, time
from pathlib import Path
from service.policy.guard import OutputGuard
from tests.test_guard import OPENER, POLICIES, REQUIRED
cache = Path(sys.argv[1])
if sys.argv[2] == "first":
    guard = OutputGuard.load(POLICIES, cache_dir=cache)
    with guard.startup_checks():
        guard.check(OPENER, required=REQUIRED, template="opener")
    print(json.dumps({"state": guard.state}))
else:
    guard = OutputGuard.load(POLICIES, cache_dir=cache, defer=True)
    with guard.startup_checks():
        kept = guard.check(OPENER, required=REQUIRED, template="opener")
    answered = guard.state
    import dateparser  # start-up's other imports, on this thread while guardrails imports on the other
    loaded = guard.wait_loaded(120)
    blocked = guard.check("Rates are 5.99% APR today.")
    print(json.dumps({"answered_while": answered, "kept": kept.allowed, "loaded": loaded, "state": guard.state,
                      "rate_quote_allowed": blocked.allowed, "rules": sorted({v.rule for v in blocked.violations})}))
"""


def test_restart_in_fresh_process_imports_guardrails_in_background(tmp_path: Path) -> None:
    """The real case: a new process whose first import of guardrails happens on the loading thread."""
    import subprocess
    import sys

    def run(mode: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", RESTART, str(tmp_path / "cache"), mode],
                              cwd=POLICIES.parent, capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert run("first") == {"state": "ok"}
    restart = run("restart")
    assert restart["answered_while"] == "loading"
    assert restart["kept"] is True
    assert restart["loaded"] is True
    assert restart["state"] == "ok"
    assert restart["rate_quote_allowed"] is False
    assert GUARD_ERROR not in restart["rules"]
    assert restart["rules"]
