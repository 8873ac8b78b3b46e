"""Load test: a burst of signed Twilio webhooks against the real service, on loopback only, bounded in time.

    uv run python benchmarks/load_test.py                      # both: PostgreSQL 2 processes, SQLite 1 process
    uv run python benchmarks/load_test.py --db postgres --processes 4 --requests 4000
    uv run python benchmarks/load_test.py --db sqlite
    uv run python benchmarks/load_test.py --missed-only --requests 500 --concurrency 64   # the opener burst

Each run starts the mock Twilio API (benchmarks/mock_twilio.py, a process) and `textback serve` (N processes
on PostgreSQL with --workers N, or one process on SQLite) on a fresh database, then fires the burst with
asyncio + httpx: missed-call dial-status callbacks from many distinct callers and inbound replies from some
of them, plus 10% exact duplicates (half sent at the same instant as the original, half later like a
Twilio retry) and 5% forged signatures (callers and message SIDs that appear nowhere else). After the burst
it waits for the service to finish its work, then reads the mock's request log and the database:

- throughput and p50/p99 webhook latency (client side, per request);
- time from the first webhook of a missed call to the opener's Messages API request (the mock's timestamps);
- invariants: exactly one opener per distinct caller, zero texts and zero rows from forged requests, zero
  lost inbound messages (rows in the database vs. distinct valid MessageSids), no 5xx.

The circuit breaker and the daily broker cap (policies/sending/caps.yaml) exist to stop exactly this kind of
flood of distinct callers, so by default the run uses a copy of policies/ with those limits raised; pass
--shipped-policies to watch the breaker stop the openers instead (the one-opener invariant then becomes
"at most one").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.twilio import fake
from service.twilio.signature import sign

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "load-test-token-7d1e"  # a local test value
FORGER_TOKEN = "not-the-auth-token"
PUBLIC_URL = "https://textback.example.com"
BROKERS = ["+14155550100", "+12125550100", "+13125550100", "+16175550100"]
BROKERS_YAML = """
brokers:
  - {twilio_number: "+14155550100", name: Dana Whitfield, brokerage: Summit Home Loans, nmls_id: "123456",
     forward_to: "+14155550111", alert_to: ["+14155550112"], timezone: America/Los_Angeles, call_screening: false}
  - {twilio_number: "+12125550100", name: Marcus Chen, brokerage: Harbor Mortgage Group, nmls_id: "2233445",
     forward_to: "+12125550111", timezone: America/New_York, call_screening: false}
  - {twilio_number: "+13125550100", name: Priya Natarajan, brokerage: Lakeshore Lending, nmls_id: "3344556",
     forward_to: "+13125550111", timezone: America/Chicago, call_screening: false}
  - {twilio_number: "+16175550100", name: Sean Walsh, brokerage: Bay State Mortgage, nmls_id: "4455667",
     forward_to: "+16175550111", timezone: America/New_York, call_screening: false}
"""
AREA_CODES = [415, 212, 312, 617, 206, 303, 512, 404, 702, 615, 503, 602]
# Replies that never stop texts: a STOP racing its own missed call rightly suppresses the opener, which would
# blur the one-opener invariant (opt-outs have their own tests).
REPLIES = ["refi, in the next month or so", "purchase", "buying a house this summer", "no not yet",
           "can you call me tomorrow morning?", "we are refinancing", "just looking at options for now"]
OPENER_MARK = "missed your call"
RAISED_CAPS = {"per_broker_per_day": 1_000_000, "breaker_max_openers": 1_000_000,
               "breaker_max_openers_per_broker": 1_000_000}


# ----------------------------------------------------------------------------------------------- workload

@dataclass
class Req:
    kind: str  # missed | reply | forged-missed | forged-reply
    path: str
    params: dict[str, str]
    signature: str
    key: str  # the caller (missed) or the MessageSid (reply)
    duplicate: bool = False
    sent_at: float = 0.0
    latency: float = 0.0
    status: int = 0
    error: str | None = None


@dataclass
class Workload:
    jobs: list[list[Req]]  # each job's requests are sent at the same instant
    callers: dict[str, str]  # valid missed caller -> broker
    message_sids: set[str]
    forged_numbers: set[str]
    forged_sids: set[str]
    forged_call_sids: set[str]
    transport_errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> list[Req]:
        return [r for job in self.jobs for r in job]


def _number(rng: random.Random, used: set[str]) -> str:
    while True:
        number = f"+1{rng.choice(AREA_CODES)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        if number not in used:
            used.add(number)
            return number


def _sid(rng: random.Random, prefix: str) -> str:
    return prefix + f"{rng.getrandbits(128):032x}"


def _dial(call_sid: str, caller: str, broker: str) -> dict[str, str]:
    return fake.dial_status_form(call_sid, caller, broker, "no-answer", account_sid=ACCOUNT_SID,
                                 DialCallSid=call_sid[:2] + call_sid[:1:-1], DialCallDuration="0")


def _sms(sid: str, sender: str, broker: str, body: str) -> dict[str, str]:
    return fake.sms_form(body, sender, broker, sid=sid, account_sid=ACCOUNT_SID)


def _req(kind: str, path: str, params: dict[str, str], key: str, *, forged: bool = False) -> Req:
    token = FORGER_TOKEN if forged else AUTH_TOKEN
    return Req(kind=kind, path=path, params=params, key=key,
               signature=sign(token=token, url=PUBLIC_URL + path, params=params))


def build_workload(total: int, seed: int) -> Workload:
    rng = random.Random(seed)
    used: set[str] = set()
    forged_n = round(total * 0.05)
    dup_n = round(total * 0.10)
    valid_n = total - forged_n - dup_n
    missed_n = round(valid_n * 0.6)
    reply_n = valid_n - missed_n
    callers = {_number(rng, used): rng.choice(BROKERS) for _ in range(missed_n)}
    order = list(callers)
    jobs: list[list[Req]] = [[_req("missed", "/twilio/voice/dial-status", _dial(_sid(rng, "CA"), c, callers[c]), c)]
                             for c in order]
    # Replies from callers who called earlier in the burst, placed a little after their call.
    message_sids: set[str] = set()
    for index, caller in enumerate(rng.sample(order, reply_n) if reply_n <= len(order) else order):
        sid = _sid(rng, "SM")
        message_sids.add(sid)
        reply = _req("reply", "/twilio/sms", _sms(sid, caller, callers[caller], rng.choice(REPLIES)), sid)
        position = min(order.index(caller) + index % 7 + rng.randint(20, 200), len(jobs))
        jobs.insert(position, [reply])
    forged_numbers: set[str] = set()
    forged_sids: set[str] = set()
    forged_call_sids: set[str] = set()
    for n in range(forged_n):
        number = _number(rng, used)
        forged_numbers.add(number)
        broker = rng.choice(BROKERS)
        if n % 2:
            sid = _sid(rng, "SM")
            forged_sids.add(sid)
            job = [_req("forged-reply", "/twilio/sms", _sms(sid, number, broker, "refi please"), sid, forged=True)]
        else:
            call_sid = _sid(rng, "CA")
            forged_call_sids.add(call_sid)
            job = [_req("forged-missed", "/twilio/voice/dial-status", _dial(call_sid, number, broker), number,
                        forged=True)]
        jobs.insert(rng.randint(0, len(jobs)), job)
    # Exact duplicates: half at the same instant as the original, half later (a Twilio retry).
    originals = [job[0] for job in jobs if not job[0].kind.startswith("forged")]
    for n, original in enumerate(rng.sample(originals, dup_n)):
        copy = Req(kind=original.kind, path=original.path, params=dict(original.params), key=original.key,
                   signature=original.signature, duplicate=True)
        if n % 2 == 0:
            next(job for job in jobs if job[0] is original).append(copy)
        else:
            start = next(i for i, job in enumerate(jobs) if job[0] is original)
            jobs.insert(rng.randint(start + 1, len(jobs)), [copy])
    return Workload(jobs=jobs, callers=callers, message_sids=message_sids, forged_numbers=forged_numbers,
                    forged_sids=forged_sids, forged_call_sids=forged_call_sids)


def build_missed_workload(total: int, seed: int) -> Workload:
    """Only missed calls: `total` dial-status callbacks from distinct callers, no replies, duplicates or forgeries
    (the burst of issue 14: how long an opener waits behind the webhooks)."""
    rng = random.Random(seed)
    used: set[str] = set()
    callers = {_number(rng, used): rng.choice(BROKERS) for _ in range(total)}
    jobs = [[_req("missed", "/twilio/voice/dial-status", _dial(_sid(rng, "CA"), c, b), c)] for c, b in callers.items()]
    return Workload(jobs=jobs, callers=callers, message_sids=set(), forged_numbers=set(), forged_sids=set(),
                    forged_call_sids=set())


async def fire(base_url: str, workload: Workload, concurrency: int, deadline: float) -> float:
    """Send every job (a job's requests at the same instant), `concurrency` jobs in flight; the burst's wall time."""
    queue: asyncio.Queue[list[Req]] = asyncio.Queue()
    for job in workload.jobs:
        queue.put_nowait(job)
    # Idle connections expire before uvicorn's 5 s keep-alive timeout closes them under a request in flight.
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def send(req: Req) -> None:
            req.sent_at = time.time()
            started = time.perf_counter()
            for attempt in range(2):  # a connection that failed before any answer is retried once, like a retry
                try:
                    response = await client.post(req.path, data=req.params,
                                                 headers={"X-Twilio-Signature": req.signature})
                    req.status = response.status_code
                    break
                except httpx.HTTPError as exc:
                    req.status, req.error = -1, f"{type(exc).__name__}{' (retried)' if attempt else ''}"
                    workload.transport_errors.append(type(exc).__name__)
            req.latency = time.perf_counter() - started

        async def worker() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                job = queue.get_nowait()
                await asyncio.gather(*(send(r) for r in job))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mock(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "mock_twilio.py"), "--account-sid", ACCOUNT_SID,
         "--auth-token", AUTH_TOKEN],
        stdout=subprocess.PIPE, stderr=(workdir / "mock.log").open("w"), text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"mock Twilio did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def textback_command() -> list[str]:
    script = Path(sys.executable).with_name("textback")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]


def _pgrep(*args: str) -> list[int]:
    try:
        out = subprocess.run(["pgrep", *args], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def child_pids(pid: int) -> list[int]:
    return _pgrep("-P", str(pid))


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def database_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (its postmaster and backends), for their CPU."""
    return _pgrep("-x", "postgres")


def start_service(env: dict[str, str], workdir: Path, processes: int, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [*textback_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if processes > 1:
        cmd += ["--workers", str(processes)]
    log = (workdir / "service.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"textback serve exited {proc.returncode}; see {workdir / 'service.log'}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        stop(proc)
        raise SystemExit(f"textback serve did not become ready in {timeout} s")
    # Every worker process builds the output guard at start-up; wait until they all sit idle.
    pids = [proc.pid, *child_pids(proc.pid)]
    previous = cpu_ticks(pids)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        pids = [proc.pid, *child_pids(proc.pid)]
        now = cpu_ticks(pids)
        if now - previous <= 5 * len(pids):  # < 5 % of a core each
            break
        previous = now
    return proc, url


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def prepare_policies(workdir: Path, *, shipped: bool) -> Path:
    if shipped:
        return REPO / "policies"
    target = workdir / "policies"
    shutil.copytree(REPO / "policies", target)
    caps_file = target / "sending" / "caps.yaml"
    caps = yaml.safe_load(caps_file.read_text())
    for name, value in RAISED_CAPS.items():
        if name in caps.get("limits", {}):
            caps["limits"][name]["value"] = value
    caps_file.write_text(yaml.safe_dump(caps, sort_keys=False, allow_unicode=True))
    return target


def prepare_database(kind: str, workdir: Path, pg_url: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'load.db'}"
    import psycopg
    from sqlmodel import SQLModel

    from service.db import make_engine

    parts = urlsplit(pg_url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(pg_url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()
    return pg_url


# -------------------------------------------------------------------------------------------- measurements

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def wait_drained(database_url: str, mock_url: str, deadline: float) -> float:
    """Wait until nothing is due in the outbox or the inbound queue and the mock has seen no send for 2 s."""
    from sqlalchemy import func, or_
    from sqlmodel import Session, select

    from service.db import make_engine
    from service.models import InboundMessage, OutboundMessage, utcnow

    engine = make_engine(database_url)
    started = time.perf_counter()
    last_count, stable_since = -1, time.monotonic()
    try:
        while time.monotonic() < deadline:
            with Session(engine) as session:
                busy_out = session.exec(select(func.count()).select_from(OutboundMessage).where(
                    or_(OutboundMessage.status == "sending",
                        (OutboundMessage.status == "pending") & (OutboundMessage.next_attempt_at <= utcnow())))).one()
                busy_in = session.exec(select(func.count()).select_from(InboundMessage).where(
                    InboundMessage.status.in_(["received", "processing"]))).one()
            count = len(httpx.get(mock_url + "/_mock/messages", timeout=10).json())
            if count != last_count:
                last_count, stable_since = count, time.monotonic()
            if busy_out == 0 and busy_in == 0 and time.monotonic() - stable_since >= 2.0:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    return time.perf_counter() - started


@dataclass
class Result:
    label: str
    requests: int
    burst_seconds: float
    drain_seconds: float
    statuses: Counter[int]
    latency_all: list[float]
    latency_valid: list[float]
    to_send: list[float]
    invariants: dict[str, Any] = field(default_factory=dict)
    service_cpu: float = float("nan")  # seconds of CPU of textback's processes, burst and drain
    database_cpu: float = float("nan")  # the same for the PostgreSQL server's processes (on this machine)
    missed_calls: int = 0  # valid missed-call webhooks
    replies: int = 0  # valid inbound texts

    @property
    def handled(self) -> int:
        """Valid missed calls and replies: what the per-call CPU is divided by."""
        return self.missed_calls + self.replies

    @property
    def throughput(self) -> float:
        return self.requests / self.burst_seconds if self.burst_seconds else float("nan")


def measure(label: str, workload: Workload, burst: float, drain: float, database_url: str, mock_url: str, *,
            shipped: bool) -> Result:
    from sqlmodel import Session, select

    from service.db import make_engine
    from service.models import CallEvent, InboundMessage, OutboundMessage

    reqs = workload.requests
    records = httpx.get(mock_url + "/_mock/requests", timeout=30).json()
    creates = [r for r in records if r["create_index"] is not None]
    sent_to = Counter(r["form"].get("To") for r in creates)
    openers = [r for r in creates if OPENER_MARK in r["form"].get("Body", "")]
    opener_count = Counter(r["form"]["To"] for r in openers)
    first_opener_at: dict[str, float] = {}
    for r in sorted(openers, key=lambda r: r["received_at"]):
        first_opener_at.setdefault(r["form"]["To"], r["received_at"])
    first_webhook_at: dict[str, float] = {}
    for req in reqs:
        if req.kind == "missed" and req.sent_at:
            first_webhook_at[req.key] = min(first_webhook_at.get(req.key, req.sent_at), req.sent_at)
    to_send = [first_opener_at[c] - first_webhook_at[c] for c in workload.callers
               if c in first_opener_at and c in first_webhook_at]
    engine = make_engine(database_url)
    with Session(engine) as session:
        stored_sids = set(session.exec(select(InboundMessage.message_sid)).all())
        processed = session.exec(select(InboundMessage.message_sid).where(InboundMessage.status == "processed")).all()
        call_sids = set(session.exec(select(CallEvent.call_sid)).all())
        opener_rows = Counter(session.exec(select(OutboundMessage.to_phone).where(OutboundMessage.purpose == "opener")).all())
        suppressed = Counter(session.exec(select(OutboundMessage.last_error).where(
            OutboundMessage.purpose == "opener", OutboundMessage.status == "suppressed")).all())
    engine.dispose()
    dup_texts = sum(n - 1 for n in Counter((r["form"].get("To"), r["form"].get("Body")) for r in creates).values() if n > 1)
    valid = [r for r in reqs if not r.kind.startswith("forged")]
    forged = [r for r in reqs if r.kind.startswith("forged")]
    statuses = Counter(r.status for r in reqs)
    callers_without = [c for c in workload.callers if opener_count[c] == 0]
    callers_twice = [c for c in workload.callers if opener_count[c] > 1]
    invariants = {
        "distinct callers": len(workload.callers),
        "callers with exactly one opener": sum(1 for c in workload.callers if opener_count[c] == 1),
        "callers with no opener": len(callers_without),
        "callers with 2+ openers": len(callers_twice),
        "opener rows for 2+ per caller (db)": sum(1 for c in workload.callers if opener_rows[c] > 1),
        "identical texts sent twice": dup_texts,
        "forged requests": len(forged),
        "forged requests answered 403": sum(1 for r in forged if r.status == 403),
        "texts to forged numbers": sum(sent_to[n] for n in workload.forged_numbers),
        "rows from forged requests": len(stored_sids & workload.forged_sids) + len(call_sids & workload.forged_call_sids),
        "distinct valid MessageSids": len(workload.message_sids),
        "inbound rows stored": len(stored_sids & workload.message_sids),
        "inbound lost": len(workload.message_sids - stored_sids),
        "inbound processed": len(set(processed) & workload.message_sids),
        "valid requests not 200": sum(1 for r in valid if r.status != 200),
        "5xx or transport errors": sum(1 for r in reqs if r.status >= 500 or r.status < 0),
        "connection errors retried once": len(workload.transport_errors),
        "Messages API requests": len(creates),
    }
    if shipped:
        invariants["openers suppressed (breaker/caps)"] = sum(suppressed.values())
    return Result(label=label, requests=len(reqs), burst_seconds=burst, drain_seconds=drain, statuses=statuses,
                  latency_all=[r.latency for r in reqs], latency_valid=[r.latency for r in valid], to_send=to_send,
                  invariants=invariants)


def verdicts(result: Result, *, shipped: bool) -> list[str]:
    inv = result.invariants
    failures = []
    if inv["callers with 2+ openers"] or inv["opener rows for 2+ per caller (db)"]:
        failures.append("a caller got more than one opener")
    if not shipped and inv["callers with no opener"]:
        failures.append("a caller got no opener")
    if inv["texts to forged numbers"] or inv["rows from forged requests"]:
        failures.append("a forged request had an effect")
    if inv["forged requests answered 403"] != inv["forged requests"]:
        failures.append("a forged request was not refused")
    if inv["inbound lost"]:
        failures.append("inbound messages lost")
    if inv["5xx or transport errors"] or inv["valid requests not 200"]:
        failures.append("requests failed")
    if inv["identical texts sent twice"]:
        failures.append("an identical text was sent twice")
    return failures


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def print_results(results: list[Result], *, shipped: bool) -> None:
    rows = [
        ("requests", lambda r: f"{r.requests:,}"),
        ("burst wall time, s", lambda r: f"{r.burst_seconds:.1f}"),
        ("throughput, webhooks/s", lambda r: f"{r.throughput:,.0f}"),
        ("webhook latency p50, ms", lambda r: ms(percentile(r.latency_all, 50))),
        ("webhook latency p99, ms", lambda r: ms(percentile(r.latency_all, 99))),
        ("webhook latency max, ms", lambda r: ms(max(r.latency_all))),
        ("webhook -> Messages API p50, ms", lambda r: ms(percentile(r.to_send, 50))),
        ("webhook -> Messages API p99, ms", lambda r: ms(percentile(r.to_send, 99))),
        ("webhook -> Messages API max, ms", lambda r: ms(max(r.to_send, default=float("nan")))),
        ("drain after the burst, s", lambda r: f"{r.drain_seconds:.1f}"),
        ("HTTP statuses", lambda r: " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()))),
        ("missed calls + replies handled", lambda r: f"{r.missed_calls:,} + {r.replies:,}"),
        ("textback CPU per call or reply, ms", lambda r: f"{r.service_cpu * 1000 / r.handled:.1f}" if r.handled
         else "-"),
        ("PostgreSQL CPU per call or reply, ms", lambda r: f"{r.database_cpu * 1000 / r.handled:.1f}"
         if r.handled and r.database_cpu == r.database_cpu else "-"),
    ]
    rows += [(name, lambda r, name=name: f"{r.invariants[name]:,}") for name in results[0].invariants]
    rows.append(("invariants", lambda r: "OK" if not verdicts(r, shipped=shipped) else
                 "FAILED: " + "; ".join(verdicts(r, shipped=shipped))))
    width = max(len(name) for name, _ in rows)
    cols = [max(len(r.label), *(len(fn(r)) for _, fn in rows)) for r in results]
    print("| " + "metric".ljust(width) + " | " + " | ".join(r.label.ljust(c) for r, c in zip(results, cols, strict=True)) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * (c + 2) for c in cols) + "|")
    for name, fn in rows:
        print("| " + name.ljust(width) + " | " + " | ".join(fn(r).rjust(c) for r, c in zip(results, cols, strict=True)) + " |")


# ------------------------------------------------------------------------------------------------------ run

def run_one(kind: str, processes: int, args: argparse.Namespace) -> Result:
    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix=f"textback-load-{kind}-"))
    (workdir / "brokers.yaml").write_text(BROKERS_YAML)
    policies = prepare_policies(workdir, shipped=args.shipped_policies)
    database_url = prepare_database(kind, workdir, args.pg_url)
    workload = (build_missed_workload if args.missed_only else build_workload)(args.requests, args.seed)
    label = f"{'PostgreSQL' if kind == 'postgres' else 'SQLite'}, {processes} proc"
    print(f"== {label}: {len(workload.requests)} requests, concurrency {args.concurrency}; logs in {workdir}",
          flush=True)
    mock, mock_url = start_mock(workdir)
    service = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
        env.update({
            "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
            "TEXTBACK_BROKERS_FILE": str(workdir / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(policies),
            "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), "TEXTBACK_TWILIO_API_URL": mock_url,
            "TEXTBACK_TWILIO_LOOKUP_URL": mock_url, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TEXTBACK_LOG_LEVEL": "WARNING", "TEXTBACK_WORKER_POLL_SECONDS": "0.5",
        })
        env.update(dict(setting.split("=", 1) for setting in args.set))
        service, url = start_service(env, workdir, processes, timeout=min(180.0, deadline - time.monotonic()))
        tree = [service.pid, *child_pids(service.pid)]
        cpu_before = cpu_ticks(tree), cpu_ticks(database_pids()) if kind == "postgres" else 0
        burst = asyncio.run(fire(url, workload, args.concurrency, deadline))
        drain = wait_drained(database_url, mock_url, deadline)
        cpu_after = cpu_ticks(tree), cpu_ticks(database_pids()) if kind == "postgres" else 0
        result = measure(label, workload, burst, drain, database_url, mock_url, shipped=args.shipped_policies)
        result.service_cpu = (cpu_after[0] - cpu_before[0]) / CLK_TCK
        # PostgreSQL's backends come and go with the pool: a backend that ended is not counted (an estimate
        # from below, close while the pool keeps its connections).
        result.database_cpu = (cpu_after[1] - cpu_before[1]) / CLK_TCK if kind == "postgres" else float("nan")
        result.missed_calls = len({r.key for r in workload.requests if r.kind == "missed"})  # redeliveries once
        result.replies = len(workload.message_sids)
    finally:
        if service is not None:
            stop(service)
        stop(mock)
    if time.monotonic() > deadline:
        print(f"   (time limit of {args.time_limit:.0f} s reached: figures are partial)", flush=True)
    return result


def _setting(value: str) -> str:
    name, sep, _ = value.partition("=")
    if not sep or not name.startswith("TEXTBACK_"):
        raise argparse.ArgumentTypeError(f"expected TEXTBACK_NAME=VALUE, got {value!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--processes", type=int, default=2, help="service processes on PostgreSQL (SQLite: 1)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64, help="jobs in flight at once")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--time-limit", type=float, default=420.0, help="seconds per run, start-up included")
    parser.add_argument("--pg-url", default=os.environ.get("TEXTBACK_LOAD_POSTGRES_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/textback_load"))
    parser.add_argument("--shipped-policies", action="store_true",
                        help="keep the shipped circuit breaker and caps (it will stop most openers)")
    parser.add_argument("--missed-only", action="store_true",
                        help="only distinct missed calls (no replies, duplicates or forgeries): the opener burst")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=_setting,
                        help="a setting for textback, e.g. TEXTBACK_WEBHOOK_THREADS=4 (repeatable)")
    args = parser.parse_args(argv)
    runs = {"postgres": [("postgres", max(args.processes, 1))], "sqlite": [("sqlite", 1)],
            "both": [("postgres", max(args.processes, 2)), ("sqlite", 1)]}[args.db]
    results = [run_one(kind, processes, args) for kind, processes in runs]
    print()
    print_results(results, shipped=args.shipped_policies)
    if args.json:
        args.json.write_text(json.dumps([{
            "label": r.label, "requests": r.requests, "burst_seconds": r.burst_seconds,
            "throughput": r.throughput, "latency_p50_ms": percentile(r.latency_all, 50) * 1000,
            "latency_p99_ms": percentile(r.latency_all, 99) * 1000,
            "to_send_p50_ms": percentile(r.to_send, 50) * 1000, "to_send_p99_ms": percentile(r.to_send, 99) * 1000,
            "statuses": dict(r.statuses), "invariants": r.invariants,
        } for r in results], indent=2))
    failed = [r.label for r in results if verdicts(r, shipped=args.shipped_policies)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
