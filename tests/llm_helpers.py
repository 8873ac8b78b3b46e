"""Helpers for the LLM tests: response bodies that arrive slowly or never, and a webhook post that does not
wait for the LLM pool.

The bodies are readable by sync and async httpx clients. respx streams such a body to the client lazily (it
only pre-reads `httpx.ByteStream`), so the client sees what it would see from a real server: the headers at
once, then the body a few bytes at a time, or not at all.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx


class TrickleStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """`body` in chunks of `chunk` bytes, `interval` seconds apart."""

    def __init__(self, body: bytes, *, chunk: int = 4, interval: float = 0.1) -> None:
        self.body, self.chunk, self.interval = body, chunk, interval

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.chunk):
            time.sleep(self.interval)
            yield self.body[start : start + self.chunk]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), self.chunk):
            await asyncio.sleep(self.interval)
            yield self.body[start : start + self.chunk]


class HangingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that never comes until `release` is set (or `limit` seconds pass): a server that hangs. Then
    `body` (by default `{}`, which is not a chat completion)."""

    def __init__(self, release: threading.Event, *, limit: float = 60.0, body: bytes = b"{}") -> None:
        self.release, self.limit, self.body = release, limit, body

    def __iter__(self) -> Iterator[bytes]:
        self.release.wait(self.limit)
        yield self.body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + self.limit
        # `release` is a threading.Event set from another thread: polled, so a cancelled read ends at once.
        while not self.release.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        yield self.body


def signed_post(client, path: str, params: dict[str, str]) -> httpx.Response:
    """A webhook signed as Twilio signs it, answered without waiting for replies the LLM is still reading
    (the `post` fixture waits for them)."""
    from service.twilio.signature import sign
    from tests.helpers import PUBLIC_URL, TWILIO_TOKEN

    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + path, params=params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})
