"""Record and replay the LLM's HTTP traffic for the evals, at the httpx transport (the OpenAI SDK's seam).

A cassette is ``evals/cassettes/<name>.jsonl``: a header line, then one line per request/response pair::

    {"cassette": 1, "base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "recorded_at": "..."}
    {"request": {"method": "POST", "url": "...", "body": {...}}, "response": {"status": 200, ...}}

Only a live run writes one (`RecordingTransport`); nothing else may. Requests are keyed by method, URL and
the JSON body with sorted keys; headers are never stored (they carry the API key) and never compared (the
SDK adds its version and retry count). `ReplayTransport` answers strictly from the cassette, in recorded
order for a request that was sent more than once, and refuses anything else: the refusal is raised *and*
kept in `misses`, because the SDK turns a transport error into a connection failure that would otherwise
look like an ordinary LLM outage. Both transports serve sync and async httpx clients (the extractor is async).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

CASSETTE_VERSION = 1
_KEPT_RESPONSE_HEADERS = ("content-type",)


class CassetteError(Exception):
    """A cassette is missing, malformed, or was asked for a request it never recorded."""


@dataclass(frozen=True)
class CassetteHeader:
    base_url: str
    model: str


def _body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def request_key(method: str, url: str, body: Any) -> str:
    """The identity of a request: what was asked, not how (headers excluded)."""
    return json.dumps([method.upper(), url, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _key(request: httpx.Request) -> str:
    return request_key(request.method, str(request.url), _body(request.read()))


class RecordingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Passes every request to `inner` and appends the exchange to `path` (replacing any older cassette)."""

    def __init__(
        self, path: Path, *, inner: httpx.BaseTransport | httpx.AsyncBaseTransport, base_url: str, model: str
    ) -> None:
        self.path = path
        self._inner = inner
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "cassette": CASSETTE_VERSION,
            "base_url": base_url,
            "model": model,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        path.write_text(json.dumps(header) + "\n", encoding="utf-8")
        self.recorded = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(self._inner, httpx.BaseTransport)  # noqa: S101 - a sync client needs a sync inner
        response = self._inner.handle_request(request)
        return self._record(request, response, response.read())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(self._inner, httpx.AsyncBaseTransport)  # noqa: S101 - likewise for async
        await request.aread()
        response = await self._inner.handle_async_request(request)
        return self._record(request, response, await response.aread())

    def _record(self, request: httpx.Request, response: httpx.Response, content: bytes) -> httpx.Response:
        entry = {
            "request": {"method": request.method, "url": str(request.url), "body": _body(request.read())},
            "response": {
                "status": response.status_code,
                "headers": {k: v for k, v in response.headers.items() if k.lower() in _KEPT_RESPONSE_HEADERS},
                "body": content.decode("utf-8", "replace"),
            },
        }
        with self._lock:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.recorded += 1
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def close(self) -> None:
        if isinstance(self._inner, httpx.BaseTransport):
            self._inner.close()

    async def aclose(self) -> None:
        if isinstance(self._inner, httpx.AsyncBaseTransport):
            await self._inner.aclose()


def read_header(path: Path) -> CassetteHeader:
    """The cassette's header line (endpoint and model it was recorded against)."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        header = json.loads(first)
    except (OSError, IndexError, ValueError) as exc:
        raise CassetteError(f"{path}: unreadable cassette ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("cassette") != CASSETTE_VERSION:
        raise CassetteError(f"{path}: not a version-{CASSETTE_VERSION} cassette")
    return CassetteHeader(base_url=str(header["base_url"]), model=str(header["model"]))


class ReplayTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers only requests recorded in the cassette; anything else raises CassetteError and is noted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header = read_header(path)
        self._answers: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.misses: list[str] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], 2):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                req, resp = entry["request"], entry["response"]
                key = request_key(req["method"], req["url"], req["body"])
                self._answers[key].append(resp)
            except (ValueError, KeyError, TypeError):
                raise CassetteError(f"{path.name}:{number}: malformed cassette entry") from None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = _key(request)
        with self._lock:
            queue = self._answers.get(key)
            if not queue:
                self.misses.append(f"{request.method} {request.url}")
                raise CassetteError(
                    f"{self.path.name}: unrecorded request {request.method} {request.url}; "
                    "replay answers only what a live run recorded (re-record with --llm live)"
                )
            answer = queue.popleft()
        return httpx.Response(
            answer["status"],
            headers=answer.get("headers") or {},
            content=answer["body"].encode(),
            request=request,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return self.handle_request(request)
