"""The framework's own HTTP refusals keep their status and are logged at WARNING without a traceback (unknown
path 404, wrong method 405 with Allow, an oversized chunked body 413 read only up to the limit), HEAD /health
and HEAD / answer 200, GET / is a small page, and a signature mismatch is logged once per path with the URL
it was checked against. In-process (TestClient) and against a real `textback serve`."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.twilio import signature
from service.twilio.signature import MISMATCH_HINT, sign
from tests.helpers import BROKERS_YAML, POLICIES, PUBLIC_URL, REPO, TWILIO_TOKEN, sms_params, status_params

LIMIT = 64 * 1024  # TEXTBACK_MAX_BODY_BYTES' default


@pytest.fixture
def events(client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.LogCaptureFixture]:
    """The service's log records (the `textback` logger does not propagate), with a fresh mismatch count."""
    monkeypatch.setattr(signature, "_mismatches", Counter())
    logger = logging.getLogger("textback")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def body_chunks(size: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), `size` bytes in 1 KiB chunks."""
    for _ in range(size // 1024):
        yield b"a" * 1024


CHUNKED = object()  # a fresh body_chunks(4 * LIMIT) per request: a generator is spent after one parameter set

FRAMEWORK = [
    # (method, path, extra request arguments, status, a method the Allow header must list)
    ("GET", "/no/such/page", {}, 404, None),
    ("GET", "/twilio/voice", {}, 405, "POST"),
    ("DELETE", "/health", {}, 405, "GET"),
    ("HEAD", "/health", {}, 200, None),
    ("HEAD", "/", {}, 200, None),
    ("POST", "/twilio/sms", {"content": CHUNKED,
                             "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413, None),
    ("POST", "/api/auth/code", {"content": CHUNKED, "headers": {"content-type": "application/json"}},
     413, None),
    ("POST", "/api/auth/code", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
    ("POST", "/twilio/sms", {"content": b"%zz=%%&&=\xff", "headers": {"content-type":
                                                                      "application/x-www-form-urlencoded"}}, 403, None),
]


@pytest.mark.parametrize(("method", "path", "extra", "status", "allow"), FRAMEWORK,
                         ids=[f"{m} {p} {s}" for m, p, _, s, _ in FRAMEWORK])
def test_framework_refusal_keeps_status_logged_at_warning(client, events, method: str, path: str, extra: dict,
                                                         status: int, allow: str | None) -> None:
    if extra.get("content") is CHUNKED:
        extra = {**extra, "content": body_chunks(4 * LIMIT)}
    response = client.request(method, path, **extra)

    assert response.status_code == status
    if allow is not None:
        assert allow in response.headers["allow"]
    if method == "HEAD":
        assert response.content == b""
    records = [r for r in events.records if r.name.startswith("textback")]
    assert all(r.levelno <= logging.WARNING for r in records), [(r.levelname, r.getMessage()) for r in records]
    assert all(r.exc_info is None for r in records)
    if status >= 400:
        assert [getattr(r, "fields", {}).get("status") for r in records if r.getMessage() == "request refused"] == [
            status]


def test_home_page_points_to_console_and_health(client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'href="/console"' in response.text
    assert 'href="/health"' in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert not re.search(r"\+1\d{10}|Dana|NMLS|textback-dev-token", response.text)


def test_signature_mismatch_logged_once_per_path(client, post, events) -> None:
    """Signed for another host (a wrong TEXTBACK_PUBLIC_URL): one WARNING for each path, naming the URL checked."""
    wrong = "https://wrong-host.example.com"
    sent: list[str] = []
    for path, params in [("/twilio/sms", sms_params("hi")), ("/twilio/sms", sms_params("again")),
                         ("/twilio/sms/status", status_params("SM" + "a" * 32, "delivered"))]:
        sent.append(sign(token=TWILIO_TOKEN, url=wrong + path, params=params))
        assert post(client, path, params, public_url=wrong).status_code == 403

    warnings = [r for r in events.records if r.getMessage() == "webhook signature does not match"
                and r.levelno == logging.WARNING]
    assert [r.fields["checked_url"] for r in warnings] == [PUBLIC_URL + "/twilio/sms",  # type: ignore[attr-defined]
                                                           PUBLIC_URL + "/twilio/sms/status"]
    assert all(r.fields["hint"] == MISMATCH_HINT for r in warnings)  # type: ignore[attr-defined]
    logged = " ".join(str(getattr(r, "fields", "")) + r.getMessage() for r in events.records)
    assert TWILIO_TOKEN not in logged
    assert not any(s in logged for s in sent)


def test_signature_mismatch_masks_numbers_in_query(client, events) -> None:
    params = sms_params("hi")
    client.post("/twilio/sms?from=+14155550123", data=params, headers={"X-Twilio-Signature": "bm90IGl0"})

    [warning] = [r for r in events.records if r.getMessage() == "webhook signature does not match"]
    assert warning.fields["checked_url"].startswith(PUBLIC_URL + "/twilio/sms?from=")  # type: ignore[attr-defined]
    assert "4155550123" not in warning.fields["checked_url"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """`textback serve` in dry-run from an empty directory: a client on its URL, and its log file."""
    workdir = tmp_path_factory.mktemp("server")
    (workdir / "brokers.yaml").write_text(BROKERS_YAML)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    env.update({"TEXTBACK_DATABASE_URL": f"sqlite:///{workdir / 'textback.db'}", "TEXTBACK_POLICIES_DIR": str(POLICIES),
                "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), "TEXTBACK_GUARD_CACHE_DIR": ""})
    script = Path(sys.executable).with_name("textback")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*command, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=15) as http:
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "textback serve did not start:\n" + log_path.read_text()
                try:
                    if http.get("/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            yield http, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def log_events(log_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.timeout(400)  # the first one waits for the server to start (a minute on a busy machine)
def test_real_server_keeps_framework_statuses_at_warning(server: tuple[httpx.Client, Path]) -> None:
    http, log_path = server
    answers = {
        "GET /": http.get("/").status_code,
        "GET /favicon.ico": http.get("/favicon.ico").status_code,
        "HEAD /health": http.head("/health").status_code,
        "PUT /health": http.put("/health").status_code,
    }
    assert answers == {"GET /": 200, "GET /favicon.ico": 404, "HEAD /health": 200, "PUT /health": 405}
    time.sleep(0.5)
    text = log_path.read_text()
    refused = [e for e in log_events(log_path) if e["event"] == "request refused"]
    assert {(e["path"], e["status"], e["level"]) for e in refused} >= {("/favicon.ico", 404, "warning"),
                                                                      ("/health", 405, "warning")}
    assert not [e for e in log_events(log_path) if e["level"] in {"error", "critical"}]
    assert "Traceback" not in text


@pytest.mark.slow
@pytest.mark.timeout(400)  # the first one waits for the server to start (a minute on a busy machine)
@pytest.mark.parametrize(("path", "content_type"), [("/twilio/sms", "application/x-www-form-urlencoded"),
                                                    ("/api/auth/code", "application/json")])
def test_real_server_stops_reading_chunked_body_at_limit(server: tuple[httpx.Client, Path], path: str,
                                                         content_type: str) -> None:
    """A chunked body past the limit that never ends is answered 413 at once: the server read only up to it."""
    http, _ = server
    host, port = str(http.base_url.host), http.base_url.port or 80
    with socket.create_connection((host, port), timeout=15) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        for _ in range(LIMIT // 1024 + 16):  # past the limit, and no last chunk: a full read would wait forever
            conn.sendall(chunk)
        head = conn.recv(200).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head


@pytest.mark.slow
@pytest.mark.timeout(400)  # the first one waits for the server to start (a minute on a busy machine)
def test_real_server_logs_signature_mismatch_once_per_path(server: tuple[httpx.Client, Path]) -> None:
    http, log_path = server
    params = sms_params("hello")
    forged = sign(token="textback-dev-token", url="https://proxy.example.com/twilio/sms", params=params)
    for _ in range(3):
        assert http.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": forged}).status_code == 403
    time.sleep(0.5)

    mismatches = [e for e in log_events(log_path) if e["event"] == "webhook signature does not match"]
    assert [(e["level"], e["checked_url"]) for e in mismatches] == [("warning", "http://localhost:8000/twilio/sms")]
    assert "TEXTBACK_PUBLIC_URL must be exactly" in str(mismatches[0]["hint"])
    assert forged not in log_path.read_text()
