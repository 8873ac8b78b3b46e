"""The real `textback serve` in a subprocess: uvicorn's access and error logs are JSON lines with phone numbers
and link tokens masked and no borrower text; with `--workers 2` and a metrics token, every worker's scrape
adds up the webhooks all workers answered (prometheus-client's multiprocess mode, set up by serve)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.settings import DEV_AUTH_TOKEN
from service.twilio import fake
from tests.helpers import BROKERS_YAML, CALLER, POLICIES, PUBLIC_URL, call_params, sms_params
from tests.test_crash_recovery import free_port, service_env, textback_command
from tests.test_metrics import samples, value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "metrics-test-token-0123456789"  # a test value
LOOKED_UP = "+14155550123"  # a number in a query string
BORROWER_TEXT = "my cell is 415 555 0177, refi please"


@dataclass
class Served:
    """A running `textback serve`, its stderr in a file."""

    proc: subprocess.Popen[bytes]
    url: str
    stderr: Path

    def post(self, path: str, params: dict[str, str]) -> httpx.Response:
        """A webhook signed as Twilio signs it (dry-run: the development token), on a fresh connection."""
        headers = fake.signature_headers(token=DEV_AUTH_TOKEN, public_url=PUBLIC_URL, path=path, form=params)
        return httpx.post(self.url + path, data=params, headers=headers, timeout=30)

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()


# Start-up builds the output guard (seconds), then each of `--workers N` builds its own: minutes on a loaded
# two-core machine. The guard's start-up check is cached across this module's services.
START_TIMEOUT = 420.0


@pytest.fixture(scope="module")
def guard_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guard-cache")


@pytest.fixture
def serve(tmp_path: Path, guard_cache: Path) -> Iterator[Callable[..., Served]]:
    started: list[subprocess.Popen[bytes]] = []

    def _serve(*args: str, **env: str) -> Served:
        (tmp_path / "brokers.yaml").write_text(BROKERS_YAML)
        (tmp_path / "tmp").mkdir(exist_ok=True)
        port = free_port()
        stderr = tmp_path / "stderr.log"
        proc = subprocess.Popen(  # our own console script
            [*textback_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=service_env({
                "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ops.db'}", "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
                "TEXTBACK_BROKERS_FILE": str(tmp_path / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(POLICIES),
                "TEXTBACK_SPOOL_DIR": str(tmp_path / "spool"), "TEXTBACK_GUARD_CACHE_DIR": str(guard_cache),
                "TMPDIR": str(tmp_path / "tmp"), **env}),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"), start_new_session=True)
        started.append(proc)
        served = Served(proc, f"http://127.0.0.1:{port}", stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}:\n" + "\n".join(served.lines()[-30:]))
            try:
                if httpx.get(served.url + "/ready", timeout=1).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail("serve did not start:\n" + "\n".join(served.lines()[-30:]))

    yield _serve
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


BANNER = ("textback on ", "policies: ", "prompts: ", "brokers: ")


def _json_lines(served: Served) -> list[dict]:
    """stderr's log lines, each parsed (a line that is no JSON fails the test); serve's own banner aside (where it
    listens, and which policies, prompts and brokers it uses: service.resources.startup_lines)."""
    return [json.loads(line) for line in served.lines() if line.strip() and not line.startswith(BANNER)]


def _stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=60)


def test_log_uvicorn_access_and_errors_as_json_with_phones_masked(serve) -> None:
    served = serve()
    assert httpx.get(f"{served.url}/api/leads?phone=%2B{LOOKED_UP[1:]}", timeout=10).status_code == 401
    assert httpx.get(f"{served.url}/l/secret-link-token-abc123", timeout=10).status_code == 410
    assert served.post("/twilio/sms", sms_params(BORROWER_TEXT, sid="SM" + "a" * 32)).status_code == 200
    with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\x00\r\n\r\n")  # uvicorn's error log: "Invalid HTTP request received."
        sock.recv(1024)
    time.sleep(1)
    _stop(served)
    text = "\n".join(served.lines())
    for secret in (LOOKED_UP[1:], CALLER[1:], "5550177", "secret-link-token", "refi please"):
        assert secret not in text, f"{secret!r} in the logs"
    events = _json_lines(served)
    access = [e for e in events if e["logger"] == "uvicorn.access"]
    paths = {e["path"]: e for e in access}
    lookup = paths["/api/leads?phone=+1********23"]
    assert (lookup["event"], lookup["level"], lookup["method"], lookup["status"]) == ("request", "info", "GET", 401)
    assert paths["/l/<token>"]["status"] == 410
    webhook = paths["/twilio/sms"]
    assert (webhook["method"], webhook["status"]) == ("POST", 200)
    assert webhook["request_id"]  # the same id as the webhook's own log lines
    assert any(e.get("request_id") == webhook["request_id"] for e in events if e["logger"].startswith("textback."))
    assert any(e["logger"] == "uvicorn.error" and e["level"] == "warning" for e in events)


def test_log_no_access_lines_when_access_log_off(serve) -> None:
    served = serve(TEXTBACK_ACCESS_LOG="false")
    assert httpx.get(f"{served.url}/health", timeout=10).status_code == 200
    _stop(served)
    assert [e for e in _json_lines(served) if e["logger"] == "uvicorn.access"] == []


def test_add_up_webhooks_of_every_worker_in_each_scrape(serve, tmp_path: Path) -> None:
    """12 webhooks on fresh connections spread over two workers; every scrape, whichever worker answers it,
    reports all 12. The multiprocess directory is serve's own and goes when serve stops."""
    served = serve("--workers", "2", TEXTBACK_METRICS_TOKEN=TOKEN)
    [shared] = list((tmp_path / "tmp").glob("textback-metrics-*"))
    for n in range(12):
        assert served.post("/twilio/voice/status", call_params(f"CA{n:032d}", CallStatus="completed")).status_code == 200
    pids = {p.name.split("_")[-1] for p in shared.glob("counter_*.db")}
    for _ in range(6):
        scraped = samples(httpx.get(served.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                    timeout=10).text)
        assert value(scraped, "textback_webhooks_total", path="/twilio/voice/status", status="200") == 12
        assert value(scraped, "textback_webhook_duration_seconds_count", path="/twilio/voice/status") == 12
    _stop(served)
    assert not shared.exists()
    events = _json_lines(served)
    assert len([e for e in events if e["logger"] == "uvicorn.access" and e["path"] == "/twilio/voice/status"]) == 12
    assert pids  # workers recorded into the shared directory


def test_serve_restart_stops_when_guard_fails_after_serving(serve, tmp_path: Path, guard_cache: Path) -> None:
    """A restart serves from the kept start-up verdicts while guardrails loads in the background; when that load
    fails (here: a guardrails that will not import), serve stops with exit status 1 and the reason, as a first
    start would have refused to start."""
    first = serve()
    _stop(first)
    fake = tmp_path / "broken-site"
    (fake / "guardrails").mkdir(parents=True)
    (fake / "guardrails" / "__init__.py").write_text('raise ImportError("guardrails is broken on purpose")\n')
    stderr = tmp_path / "restart.log"
    port = free_port()
    proc = subprocess.Popen(  # our own console script
        [*textback_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=service_env({
            "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ops.db'}", "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
            "TEXTBACK_BROKERS_FILE": str(tmp_path / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(POLICIES),
            "TEXTBACK_SPOOL_DIR": str(tmp_path / "spool"), "TEXTBACK_GUARD_CACHE_DIR": str(guard_cache),
            "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(fake)}),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"), start_new_session=True)
    try:
        code = proc.wait(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = stderr.read_text()
    assert code == 1, text[-3000:]
    assert "the output guard did not load" in text
    assert "guardrails is broken on purpose" in text
