"""Prometheus metrics: every metric textback exports is defined here, recorded with one call where its event
happens, and served at `GET /metrics` when `TEXTBACK_METRICS_TOKEN` is set (service.app).

Recording is in memory (a lock and an add): no database statement and no I/O on the webhook path. The queue
depth is the exception that proves it: gauges read from the database at scrape time only (service.backlog).

Several processes (`textback serve --workers N`): serve points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory before the workers start (prometheus-client reads it when it is first imported, so only the
spawned workers, which import it afresh, record there); each worker then writes its samples to files of
its own and any worker's scrape adds up every process's counters and histograms. Without the variable a
scrape shows the one process that answered it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from service.backlog import Backlog
    from service.db import WriteTurns

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

WEBHOOKS = Counter("textback_webhooks", "Twilio webhooks answered, by path and HTTP status.", ["path", "status"])
WEBHOOK_SECONDS = Histogram(
    "textback_webhook_duration_seconds", "Time to answer a Twilio webhook (Twilio gives up at 15 s).", ["path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0))
TEXTS = Counter(
    "textback_texts",
    "Text outcomes, by audience (borrower, broker) and outcome: at queueing blocked / suppressed / deferred; "
    "at sending sent / dry_run / reconciled / deferred / suppressed / retry / failed.",
    ["audience", "outcome"])
HANDOFFS = Counter("textback_handoffs", "Leads handed to a person, by reason.", ["reason"])
LLM_CALLS = Counter("textback_llm_calls", "LLM extractions, by result (ok, or the failure reason).", ["result"])
LLM_SECONDS = Histogram("textback_llm_call_duration_seconds", "Time an LLM extraction took, deadline included.",
                        buckets=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0))
FAILURES = Counter(
    "textback_failures",
    "Things that went wrong: send_error (a send attempt failed), inbound_error (a reply's processing failed), "
    "spooled (a webhook spooled: database unreachable), spool_error (the spool could not be written), "
    "http_5xx (an answer with a 5xx status).",
    ["kind"])


def webhook(path: str, status: int, seconds: float) -> None:
    WEBHOOKS.labels(path, str(status)).inc()
    WEBHOOK_SECONDS.labels(path).observe(seconds)


def text(audience: str, outcome: str) -> None:
    TEXTS.labels(str(audience), outcome).inc()


def handoff(reasons: Iterable[str]) -> None:
    for reason in reasons:
        HANDOFFS.labels(reason).inc()


def llm_call(result: str, seconds: float) -> None:
    LLM_CALLS.labels(result).inc()
    LLM_SECONDS.observe(seconds)


def failure(kind: str) -> None:
    FAILURES.labels(kind).inc()


class WebhookMetrics:
    """ASGI middleware: counts and times the answers to the given (Twilio webhook) paths; other paths pass."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path not in self.paths or scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started, status, done = time.perf_counter(), 500, False

        async def sending(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                done = True
                webhook(path, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not done:  # the app raised before answering: the server answers 500
                webhook(path, status, time.perf_counter() - started)


class QueueCollector(Collector):
    """Queue-depth gauges, read from the database (service.backlog) when scraped."""

    def __init__(self, read: Callable[[], Backlog]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        backlog = self.read()
        for name, doc, value in (
            ("textback_queue_pending_texts", "Unsent texts, deferred ones included.", backlog.pending_texts),
            ("textback_queue_due_texts", "Unsent texts whose time has come.", backlog.due_texts),
            ("textback_queue_oldest_due_seconds", "How long the oldest due text has waited.",
             backlog.oldest_due_seconds),
            ("textback_queue_unprocessed_replies", "Replies received and not processed yet.",
             backlog.unprocessed_replies),
            ("textback_queue_oldest_reply_seconds", "How long the oldest unprocessed reply has waited.",
             backlog.oldest_reply_seconds),
            ("textback_spool_files", "Spool files of webhooks waiting for replay (this host).",
             backlog.spooled_files),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class WriteTurnCollector(Collector):
    """The SQLite write turn's totals in this process (service.db.write_turns), read when scraped; nothing on
    PostgreSQL. `rate(textback_sqlite_write_turn_held_seconds_total[1m])` is the share of the time the one
    write lock was held: near 1, the writes bound the process (move to PostgreSQL, or fewer writes)."""

    def __init__(self, read: Callable[[], WriteTurns | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        totals = self.read()
        if totals is None:
            return
        yield CounterMetricFamily("textback_sqlite_write_turns", "Write transactions that took the SQLite "
                                  "write turn (this process).", value=totals.turns)
        yield CounterMetricFamily("textback_sqlite_write_turn_held_seconds", "Seconds the SQLite write turn was "
                                  "held, from taking it to the transaction's end (this process).",
                                  value=totals.held_seconds)
        yield CounterMetricFamily("textback_sqlite_write_turn_wait_seconds", "Seconds writers waited for the "
                                  "SQLite write turn (this process).", value=totals.waited_seconds)


def share_across_workers(workers: int, *, enabled: bool) -> None:
    """Before uvicorn spawns `workers` > 1 processes with metrics enabled: point PROMETHEUS_MULTIPROC_DIR at a
    fresh directory (removed at exit) that the spawned workers inherit, unless the operator set one."""
    if workers <= 1 or not enabled or os.environ.get(MULTIPROC_ENV):
        return
    directory = tempfile.mkdtemp(prefix="textback-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def exposition(read_backlog: Callable[[], Backlog],
               read_write_turns: Callable[[], WriteTurns | None] = lambda: None) -> bytes:
    """The text exposition: this process's metrics (every worker's, in multiprocess mode), the queue, and (SQLite)
    this process's write turn."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        recorded = generate_latest(registry)
    else:
        recorded = generate_latest(REGISTRY)
    queue = CollectorRegistry(auto_describe=False)
    queue.register(QueueCollector(read_backlog))
    queue.register(WriteTurnCollector(read_write_turns))
    return recorded + generate_latest(queue)
