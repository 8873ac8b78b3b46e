"""Bounded lanes of threads for the work done after a webhook's response: one lane for sends, one for reply
processing (the LLM has its own pool, service.llm_pool). Each lane has its own threads and its own bound, so a
slow dependency (a Twilio that hangs, a database lock held by a reply) delays only its own kind of work, and
none of it shares the threads the webhooks run on (anyio's limiter) or the event loop's default executor.

A lane holds at most `threads + backlog` jobs. A job it cannot take is refused at once (`submit` returns None):
the work is a row already (a pending text, a received reply), so the sweep picks it up; the lane wakes the sweep
(`on_free`) as soon as a refused lane has room again. A job is keyed (the row's id): a key already in the lane is
not queued twice, so a sweep that finds a row a queued job is about to claim adds nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from service.db import urgent_writes
from service.logs import log

logger = logging.getLogger("textback.lanes")

T = TypeVar("T")


class Lane:
    """`threads` threads and room for `backlog` more jobs waiting; never blocks the caller."""

    def __init__(self, name: str, threads: int, *, backlog: int | None = None,
                 on_free: Callable[[], None] | None = None, urgent: bool = False) -> None:
        if threads < 1:
            raise ValueError(f"the {name} lane needs at least one thread")
        self.name = name
        self.threads = threads
        self.capacity = threads + (threads * 16 if backlog is None else backlog)
        self._on_free = on_free
        self._urgent = urgent  # its jobs' SQLite writes go first (service.db.urgent_writes)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"textback-{name}")
        self._state = threading.Condition()
        self._keys: dict[Hashable, Future[object]] = {}
        self._count = 0
        self._turned_away = False
        self._closed = False

    @property
    def busy(self) -> int:
        """Jobs running or waiting in the lane."""
        with self._state:
            return self._count

    def submit(self, key: Hashable, job: Callable[[], T]) -> Future[T] | None:
        """Queue `job` under `key`; the future of the job already queued under that key; None when the lane
        is full or shut down (the row waits for the sweep)."""
        with self._state:
            held = self._keys.get(key)
            if held is not None:
                return held  # type: ignore[return-value]
            if self._closed or self._count >= self.capacity:
                if not self._turned_away and not self._closed:  # once per episode, not once per job
                    log(logger, logging.WARNING, "lane full; work waits in the database for the sweep",
                        lane=self.name, capacity=self.capacity)
                self._turned_away = True
                return None
            self._count += 1
            try:
                future: Future[T] = self._executor.submit(self._run, key, job)
            except RuntimeError:  # shut down meanwhile
                self._count -= 1
                return None
            self._keys[key] = future  # type: ignore[assignment]
            return future

    def _run(self, key: Hashable, job: Callable[[], T]) -> T:
        try:
            if self._urgent:
                with urgent_writes():
                    return job()
            return job()
        finally:
            with self._state:
                self._count -= 1
                self._keys.pop(key, None)
                turned_away, self._turned_away = self._turned_away, False
                self._state.notify_all()
            if turned_away and self._on_free is not None:
                self._on_free()  # work was left for the sweep while the lane was full: sweep now

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the lane has no job; False if some remain after `timeout` seconds."""
        with self._state:
            return self._state.wait_for(lambda: self._count == 0, timeout)

    def shutdown(self, timeout: float) -> None:
        """Take no more jobs; drop the waiting ones (their rows stay for the sweep); give running ones up to
        `timeout` seconds, then let their threads go."""
        with self._state:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._state:  # cancelled jobs never ran: they no longer count
            for key, future in list(self._keys.items()):
                if future.cancelled():
                    self._keys.pop(key)
                    self._count -= 1
        if not self.wait_idle(timeout):
            log(logger, logging.WARNING, "lane jobs still running at shutdown", lane=self.name, running=self.busy)
