"""A small local stand-in for Twilio's Messages API over HTTP, on loopback only.

It speaks enough of the real API for the twilio SDK (and so textback's gateway) to work against it:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` creates a message: 201 with Twilio's JSON (a
  unique ``SM...`` SID, ``status: queued``, RFC 2822 dates) or Twilio's error JSON.
- ``GET  /2010-04-01/Accounts/{AccountSid}/Messages.json`` lists messages newest first, filtered by ``To``,
  ``From``, ``DateSent`` / ``DateSent>`` / ``DateSent<`` and paginated with ``PageSize`` / ``Page`` like the
  real list (``{"messages": [...], "next_page_uri": ..., "page": 0, ...}``): this is what reconciliation of a
  send with an unknown outcome reads.
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` fetches one message.

Every request is recorded with its arrival time (``time.time()``), and the Nth create can be told to fail
(any status and Twilio error code), to hang (sleep longer than the client's timeout, with or without the
message being created first: "Twilio accepted it but the answer was lost" versus "it never got there") or to
drop the connection without an answer.

In a test::

    with MockTwilio(account_sid=SID, auth_token=TOKEN) as mock:
        mock.hang(1, seconds=60, create=True)
        ...  # point TEXTBACK_TWILIO_API_URL at mock.url
        assert len(mock.creates()) == 1

As a process (the load test runs it this way)::

    uv run python benchmarks/mock_twilio.py --port 0 --account-sid AC... --auth-token ...

prints ``mock-twilio listening on http://127.0.0.1:PORT`` and serves until SIGTERM / Ctrl-C. The same
control is then available over HTTP: ``GET /_mock/requests``, ``GET /_mock/messages``, ``POST /_mock/faults``
(JSON ``{"n": 1, "kind": "hang", "seconds": 60, "create": true}``) and ``POST /_mock/reset``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's service

from service.twilio import fake

API_VERSION = fake.API_VERSION
_LIST_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_ONE_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")


@dataclass
class Fault:
    """What to do to one create request instead of answering 201."""

    kind: str  # "fail" | "hang" | "reset"
    status: int = 500
    code: int | None = None
    message: str = "mock failure"
    seconds: float = 60.0
    create: bool = False  # hang only: store the message before hanging (Twilio accepted it, the answer is lost)


@dataclass
class RecordedRequest:
    """One request as the mock saw it."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    received_at: float
    create_index: int | None = None  # 1-based index among Messages.json POSTs
    status: int | None = None
    responded_at: float | None = None
    fault: str | None = None
    sid: str | None = None


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[int, Fault] = field(default_factory=dict)
    creates: int = 0


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))


def _parse_twilio_date(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value: ``YYYY-MM-DD`` (day precision) or ``YYYY-MM-DDTHH:MM:SSZ``."""
    value = value.strip()
    if "T" in value:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC), False
    return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC), True


class MockTwilio:
    """The mock server; use as a context manager (a thread) or through ``main()`` (a process)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, account_sid: str | None = None,
                 auth_token: str | None = None) -> None:
        if host not in {"127.0.0.1", "::1", "localhost"}:
            msg = "the mock Twilio only listens on loopback"
            raise ValueError(msg)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Lock()
        self._state = _State()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        _quiet_errors(self._server)
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MockTwilio:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mock-twilio", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes every hanging request
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever(poll_interval=0.1)
        finally:
            self._closing.set()
            self._server.server_close()

    def __enter__(self) -> MockTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------------------
    def add_fault(self, n: int, fault: Fault) -> None:
        """Apply `fault` to the Nth (1-based) create request."""
        with self._lock:
            self._state.faults[n] = fault

    def fail(self, n: int, *, status: int = 500, code: int | None = None, message: str = "mock failure") -> None:
        self.add_fault(n, Fault(kind="fail", status=status, code=code, message=message))

    def hang(self, n: int, *, seconds: float = 60.0, create: bool = False) -> None:
        self.add_fault(n, Fault(kind="hang", seconds=seconds, create=create))

    def reset_connection(self, n: int) -> None:
        self.add_fault(n, Fault(kind="reset"))

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    # -- what happened ----------------------------------------------------------------------------------
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def creates(self) -> list[RecordedRequest]:
        """Every Messages.json POST that arrived (whatever the answer)."""
        return [r for r in self.requests() if r.create_index is not None]

    def lists(self) -> list[RecordedRequest]:
        """Every Messages.json GET (reconciliation reads)."""
        return [r for r in self.requests() if r.method == "GET" and _LIST_RE.match(r.path)]

    def messages(self) -> list[dict[str, Any]]:
        """Every message the mock created (the account's message log)."""
        with self._lock:
            return [dict(m) for m in self._state.messages]

    def wait_for_creates(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            creates = self.creates()
            if len(creates) >= count:
                return creates
            time.sleep(0.02)
        return self.creates()

    # -- request handling (called from the handler threads) ---------------------------------------------
    def _record(self, method: str, path: str, query: dict[str, str], form: dict[str, str]) -> RecordedRequest:
        with self._lock:
            create_index = None
            if method == "POST" and _LIST_RE.match(path):
                self._state.creates += 1
                create_index = self._state.creates
            record = RecordedRequest(seq=len(self._state.requests) + 1, method=method, path=path, query=query,
                                     form=form, received_at=time.time(), create_index=create_index)
            self._state.requests.append(record)
            return record

    def _fault_for(self, record: RecordedRequest) -> Fault | None:
        if record.create_index is None:
            return None
        with self._lock:
            return self._state.faults.get(record.create_index)

    def _create(self, account: str, form: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        sid = "SM" + secrets.token_hex(16)
        message = fake.message_json(form.get("To"), form.get("From"), form.get("Body", ""), sid=sid,
                                    account_sid=account)
        message.update({
            "date_created": _rfc2822(now), "date_sent": _rfc2822(now), "date_updated": _rfc2822(now),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"},
        })
        with self._lock:
            self._state.messages.append(message)
        return message

    def _list(self, account: str, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            rows = [m for m in reversed(self._state.messages) if m["account_sid"] == account]
        if query.get("To"):
            rows = [m for m in rows if m["to"] == query["To"]]
        if query.get("From"):
            rows = [m for m in rows if m["from"] == query["From"]]
        for key, keep in (("DateSent>", lambda sent, at, day: (sent.date() >= at.date()) if day else sent >= at),
                          ("DateSent<", lambda sent, at, day: (sent.date() <= at.date()) if day else sent <= at),
                          ("DateSent", lambda sent, at, day: sent.date() == at.date())):
            if query.get(key):
                at, day = _parse_twilio_date(query[key])
                rows = [m for m in rows if keep(_parse_sent(m), at, day)]
        page_size = max(1, min(int(query.get("PageSize") or 50), 1000))
        page = max(0, int(query.get("Page") or 0))
        chunk = rows[page * page_size:(page + 1) * page_size]
        base = f"/{API_VERSION}/Accounts/{account}/Messages.json"
        keep_query = {k: v for k, v in query.items() if k not in {"Page", "PageToken"}}

        def page_uri(number: int) -> str:
            return base + "?" + urlencode({**keep_query, "PageSize": page_size, "Page": number})

        more = (page + 1) * page_size < len(rows)
        return {
            "messages": chunk, "end": page * page_size + max(len(chunk) - 1, 0), "start": page * page_size,
            "page": page, "page_size": page_size, "uri": page_uri(page), "first_page_uri": page_uri(0),
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "next_page_uri": (page_uri(page + 1) + f"&PageToken=PA{secrets.token_hex(8)}") if more else None,
        }

    def _fetch(self, account: str, sid: str) -> dict[str, Any] | None:
        with self._lock:
            for message in self._state.messages:
                if message["sid"] == sid and message["account_sid"] == account:
                    return dict(message)
        return None

    def _authorized(self, header: str | None, account: str) -> bool:
        if self.account_sid is None and self.auth_token is None:
            return True
        if self.account_sid is not None and account != self.account_sid:
            return False
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == account and (self.auth_token is None or password == self.auth_token)


def _parse_sent(message: dict[str, Any]) -> datetime:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(message["date_sent"])


def _twilio_error(status: int, code: int | None, message: str) -> dict[str, Any]:
    return {"code": code or status * 100, "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code or status * 100}", "status": status}


def _handler_for(mock: MockTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind httpx's pool
        server_version = "mock-twilio/1.0"
        disable_nagle_algorithm = True  # TCP_NODELAY on each accepted socket: no ~40 ms delayed-ACK stall

        def log_message(self, format: str, *args: object) -> None:  # the stdlib's name
            pass

        def _send_json(self, status: int, payload: object, record: RecordedRequest | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
            # Headers and body in one send: written apart, the body waits for the client's delayed ACK (Nagle).
            self._headers_buffer.append(b"\r\n" + body)  # end_headers' blank line, then the body
            self.flush_headers()
            if record is not None:
                with mock._lock:
                    record.status, record.responded_at = status, time.time()

        def _read_body(self) -> str:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length).decode("utf-8", "replace") if length else ""

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            if parts.path.startswith("/_mock/"):
                self._control_get(parts.path)
                return
            record = mock._record("GET", parts.path, query, {})
            if match := _LIST_RE.match(parts.path):
                if not mock._authorized(self.headers.get("Authorization"), match["account"]):
                    self._send_json(401, _twilio_error(401, 20003, "Authenticate"), record)
                    return
                self._send_json(200, mock._list(match["account"], query), record)
                return
            if match := _ONE_RE.match(parts.path):
                found = mock._fetch(match["account"], match["sid"])
                if found is None:
                    self._send_json(404, _twilio_error(404, 20404, "The requested resource was not found"), record)
                else:
                    self._send_json(200, found, record)
                return
            self._send_json(404, _twilio_error(404, 20404, "The requested resource was not found"), record)

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            raw = self._read_body()
            if parts.path.startswith("/_mock/"):
                self._control_post(parts.path, raw)
                return
            form = dict(parse_qsl(raw, keep_blank_values=True))
            record = mock._record("POST", parts.path, dict(parse_qsl(parts.query)), form)
            match = _LIST_RE.match(parts.path)
            if match is None:
                self._send_json(404, _twilio_error(404, 20404, "The requested resource was not found"), record)
                return
            account = match["account"]
            if not mock._authorized(self.headers.get("Authorization"), account):
                self._send_json(401, _twilio_error(401, 20003, "Authenticate"), record)
                return
            fault = mock._fault_for(record)
            if fault is not None:
                record.fault = fault.kind
                if fault.kind == "fail":
                    self._send_json(fault.status, _twilio_error(fault.status, fault.code, fault.message), record)
                    return
                if fault.kind == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault.kind == "hang":
                    if fault.create:
                        record.sid = mock._create(account, form)["sid"]
                    mock._closing.wait(fault.seconds)
                    self.close_connection = True
                    return  # never answer: the client times out (or its process dies)
            for name in ("To", "From", "Body"):
                if not form.get(name):
                    self._send_json(400, _twilio_error(400, 21604 if name == "To" else 21602,
                                                       f"A '{name}' parameter is required."), record)
                    return
            message = mock._create(account, form)
            record.sid = message["sid"]
            self._send_json(201, message, record)

        # -- control (process mode) ----------------------------------------------------------------------
        def _control_get(self, path: str) -> None:
            if path == "/_mock/requests":
                self._send_json(200, [asdict(r) for r in mock.requests()])
            elif path == "/_mock/messages":
                self._send_json(200, mock.messages())
            else:
                self._send_json(404, {"error": "unknown control path"})

        def _control_post(self, path: str, raw: str) -> None:
            if path == "/_mock/reset":
                mock.reset()
                self._send_json(200, {"ok": True})
                return
            if path == "/_mock/faults":
                try:
                    spec = dict(json.loads(raw or "{}"))
                except (json.JSONDecodeError, TypeError, ValueError):
                    self._send_json(400, {"error": "expected a JSON object"})
                    return
                n = int(spec.pop("n", 1))
                mock.add_fault(n, Fault(**spec))
                self._send_json(200, {"ok": True})
                return
            self._send_json(404, {"error": "unknown control path"})

    return Handler


def _quiet_errors(server: ThreadingHTTPServer) -> None:
    """A client that dies mid-request (the point of a crash test) is not an error worth a traceback."""
    original = server.handle_error

    def handle_error(request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        original(request, client_address)  # type: ignore[arg-type]

    server.handle_error = handle_error  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=None, help="require this account in the URL and Basic auth")
    parser.add_argument("--auth-token", default=None, help="require this token in Basic auth")
    parser.add_argument("--hang", action="append", default=[], metavar="N:SECONDS[:create]",
                        help="hang the Nth create for SECONDS (':create' stores the message first)")
    parser.add_argument("--fail", action="append", default=[], metavar="N:STATUS[:CODE]",
                        help="answer the Nth create with this HTTP status and Twilio error code")
    args = parser.parse_args(argv)
    mock = MockTwilio(host=args.host, port=args.port, account_sid=args.account_sid, auth_token=args.auth_token)
    for spec in args.hang:
        n, seconds, *rest = spec.split(":")
        mock.hang(int(n), seconds=float(seconds), create=bool(rest and rest[0] == "create"))
    for spec in args.fail:
        n, status, *rest = spec.split(":")
        mock.fail(int(n), status=int(status), code=int(rest[0]) if rest else None)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=mock._server.shutdown).start())
    print(f"mock-twilio listening on {mock.url}", flush=True)
    try:
        mock.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
