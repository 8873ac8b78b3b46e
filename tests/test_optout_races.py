"""An opt-out is final the moment it commits: races fired many times on one database from two app instances.

Two instances are two `create_app(ctx=...)` test clients with their own context and engine (connection pool) on
the same database, what two `textback serve` processes share (the SQLite file lock and PostgreSQL's advisory
locks see two engines exactly as they see two processes). Every race runs for many numbers at once, on SQLite
always and on PostgreSQL when TEXTBACK_TEST_POSTGRES_URL is set.

Times are observed at the boundaries only: a SQLAlchemy `after_commit` listener notes when each transaction
holding an opt-out (or an opt-out event) committed, and the mocked Twilio API notes when each request arrived.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from service import optout_lock, store
from service.app import create_app
from service.context import AppContext
from service.db import session_scope
from service.errors import NumberBusy
from service.models import OptOut, OptOutEvent
from service.sending.policy import load_sending_policy
from service.twilio.signature import sign
from tests.helpers import (
    BROKER,
    POLICIES,
    PUBLIC_URL,
    TWILIO_TOKEN,
    call_params,
    rendered,
    session_hooks,
    sms_params,
    twilio_created,
)
from tests.optout_lock_children import change_in_child, hold_for_send_in_child

pytestmark = pytest.mark.postgres

DIAL = "/twilio/voice/dial-status"
LOOKUP = "https://lookups.twilio.com/v2/PhoneNumbers/"
RUNS = 40  # numbers raced per test and database


@dataclass
class Arrival:
    to: str
    body: str
    at: float


@dataclass
class Observed:
    """What the boundaries saw: commits holding opt-out state, and requests reaching the Twilio API.

    What a transaction wrote is noted at each flush and recorded with the time its outermost commit returned
    (a savepoint released inside it is not a commit)."""

    opted_out_at: dict[str, float] = field(default_factory=dict)  # first commit with the number opted out
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (commit time, phone, action)
    arrivals: list[Arrival] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def after_flush(self, session: OrmSession, _context: object) -> None:
        """Events are kept until their transaction commits (the identity map holds them only weakly)."""
        for obj in session.new:
            if isinstance(obj, OptOutEvent):
                session.info.setdefault("observed_events", []).append((obj.phone, obj.action))
        for obj in itertools.chain(session.new, session.dirty):
            if isinstance(obj, OptOut) and obj.opted_out:
                session.info.setdefault("observed_optouts", set()).add(obj.phone)

    def after_rollback(self, session: OrmSession) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint was rolled back (a duplicate insert); the transaction goes on
        session.info.pop("observed_events", None)
        session.info.pop("observed_optouts", None)

    def after_commit(self, session: OrmSession) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint was released; the transaction goes on
        now = time.perf_counter()
        with self._lock:
            for phone in session.info.pop("observed_optouts", set()):
                self.opted_out_at.setdefault(phone, now)
            for phone, action in session.info.pop("observed_events", []):
                self.events.append((now, phone, action))

    def twilio(self, delay: float = 0.005) -> Callable[[httpx.Request], httpx.Response]:
        def respond(request: httpx.Request) -> httpx.Response:
            form = dict(httpx.QueryParams(request.content.decode()))
            with self._lock:
                self.arrivals.append(Arrival(form["To"], form["Body"], time.perf_counter()))
            time.sleep(delay)
            return twilio_created(request)

        return respond

    def texts_to(self, phone: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.to == phone]


@pytest.fixture
def observed() -> Iterator[Observed]:
    with session_hooks(Observed()) as seen:
        yield seen


@pytest.fixture
def roomy_sending_policy(tmp_path: Path, collaborators: dict[str, object]):
    """The shipped sending policy with the breaker and caps raised (many openers at once are the test), for
    every context built after it."""
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    path = copy / "sending" / "caps.yaml"
    text = path.read_text()
    for name in ("per_broker_per_day", "breaker_max_openers", "breaker_max_openers_per_broker"):
        head, _, rest = text.partition(f"  {name}:\n    value: ")
        text = head + f"  {name}:\n    value: 100000" + rest[rest.index("\n"):]
    path.write_text(text)
    collaborators["sending_policy"] = policy = load_sending_policy(copy)
    return policy


@pytest.fixture
def clients(roomy_sending_policy, ctx, second_ctx, twilio_api) -> Iterator[list[TestClient]]:
    """Two app instances on one database (both built with the roomy policy), each running its own
    after-response work."""
    with TestClient(app=create_app(ctx=ctx, run_worker=False), base_url="http://testserver.local") as one, \
         TestClient(app=create_app(ctx=second_ctx, run_worker=False), base_url="http://testserver.local") as two:
        yield [one, two]


def signed_post(client: TestClient, path: str, params: dict[str, str]) -> int:
    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + path, params=params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature}).status_code


def caller(n: int) -> str:
    return f"+1415556{n:04d}"


def dial(n: int, phone: str) -> dict[str, str]:
    return call_params(f"CA{n:032x}", phone, BROKER, CallStatus="in-progress", DialCallStatus="no-answer",
                       DialCallSid="CA" + "9" * 32)


def together(*calls: Callable[[], int]) -> list[int]:
    """Run the calls at the same instant (a barrier), each in its own thread."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def race(scenario: Callable[[int], None], runs: int = RUNS, parallel: int = 6) -> None:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(scenario, range(runs)))


@pytest.mark.parametrize("lookup", [False, True], ids=["no-lookup", "lookup"])
@pytest.mark.parametrize("stop", ["STOP", "please stop texting me"], ids=["keyword", "plain-words"])
def test_send_no_text_after_stop_committed_when_stop_races_missed_call(
    clients, ctx, second_ctx, twilio_api, observed, lookup, stop,
) -> None:
    """A missed call (opener, with a Twilio Lookup when enabled) and a STOP from the same number at once."""
    for context in (ctx, second_ctx):
        context.settings.line_type_lookup = lookup
    twilio_api["messages"].mock(side_effect=observed.twilio())

    def slow_lookup(request: httpx.Request) -> httpx.Response:
        time.sleep(random.uniform(0.05, 0.25))  # timing jitter
        phone = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={"phone_number": phone, "line_type_intelligence": {"type": "mobile"},
                                         "url": str(request.url)})

    twilio_api.get(url__startswith=LOOKUP).mock(side_effect=slow_lookup)
    rng = random.Random(9)
    delays = [rng.uniform(0.0, 0.3 if lookup else 0.05) for _ in range(RUNS)]

    def scenario(n: int) -> None:
        phone = caller(n)

        def stop_after_a_moment() -> int:
            time.sleep(delays[n])
            return signed_post(clients[(n + 1) % 2], "/twilio/sms", sms_params(stop, sender=phone))

        statuses = together(lambda: signed_post(clients[n % 2], DIAL, dial(n, phone)), stop_after_a_moment)
        assert statuses == [200, 200]

    race(scenario)
    late: list[tuple[str, float]] = []
    in_time = 0
    confirmations: Counter[str] = Counter()
    for n in range(RUNS):
        phone = caller(n)
        committed = observed.opted_out_at[phone]
        for text in observed.texts_to(phone):
            if text.body == rendered(ctx, "optout_confirm"):
                confirmations[phone] += 1
            elif text.at > committed:
                late.append((phone, round(text.at - committed, 3)))
            else:
                in_time += 1
    print(f"\nSTOP vs opener ({stop!r}, lookup={lookup}): {len(late)} of {RUNS} openers after the STOP committed"
          f" ({in_time} reached Twilio before it)")
    assert late == [], "a text was requested after the number's opt-out committed"
    assert confirmations == dict.fromkeys((caller(n) for n in range(RUNS)), 1), "exactly one confirmation each"


def test_keep_last_committed_state_when_start_and_stop_race(clients, ctx, twilio_api, observed) -> None:
    """START and STOP at once from a number that had opted out: the state is the last committed request's."""
    twilio_api["messages"].mock(side_effect=observed.twilio(0.0))
    rng = random.Random(5)
    delays = [(rng.uniform(0, 0.02), rng.uniform(0, 0.02)) for _ in range(RUNS)]

    def scenario(n: int) -> None:
        phone = caller(n)
        assert signed_post(clients[0], "/twilio/sms", sms_params("STOP", sender=phone)) == 200

        def send(client: TestClient, word: str, delay: float) -> int:
            time.sleep(delay)
            return signed_post(client, "/twilio/sms", sms_params(word, sender=phone))

        statuses = together(lambda: send(clients[0], "START", delays[n][0]),
                            lambda: send(clients[1], "STOP", delays[n][1]))
        assert statuses == [200, 200]

    race(scenario)
    last: dict[str, str] = {}
    for _at, phone, action in sorted(observed.events):
        last[phone] = action
    with Session(ctx.engine) as session:
        state = {row.phone: row.opted_out for row in session.exec(select(OptOut))}
    lost = [phone for phone, action in last.items() if state[phone] != (action == "opt_out")]
    print(f"\nSTART vs STOP: {len(lost)} of {RUNS} numbers not in the last committed request's state")
    assert len(last) == RUNS
    assert lost == []


def test_send_one_confirmation_when_two_stops_race(clients, ctx, twilio_api, observed) -> None:
    """Two opt-out words at once from one number (two instances): one opt-out, one confirmation."""
    twilio_api["messages"].mock(side_effect=observed.twilio())

    def scenario(n: int) -> None:
        phone = caller(n)
        statuses = together(
            lambda: signed_post(clients[0], "/twilio/sms", sms_params("STOP", sender=phone)),
            lambda: signed_post(clients[1], "/twilio/sms", sms_params("Unsubscribe", sender=phone)),
        )
        assert statuses == [200, 200]

    race(scenario)
    confirmations = Counter(a.to for a in observed.arrivals if a.body == rendered(ctx, "optout_confirm"))
    doubled = [phone for phone, count in confirmations.items() if count > 1]
    print(f"\ntwo STOPs: {len(doubled)} of {RUNS} numbers got two confirmations")
    assert confirmations == dict.fromkeys((caller(n) for n in range(RUNS)), 1)
    per_number: defaultdict[str, int] = defaultdict(int)
    for _at, phone, action in observed.events:
        per_number[phone] += action == "opt_out"
    assert set(per_number.values()) == {2}, "both requests are in the history"


# ---------------------------------------------------------------------------------------------------------
# The lock across processes: a send in flight in one process holds back an opt-out in another, and the reverse.


def _in_child(target: Callable[..., None], ctx: AppContext, phone: str) -> tuple[Any, Any, Any, Any]:
    spawn = multiprocessing.get_context("spawn")
    held, release, seen = spawn.Event(), spawn.Event(), spawn.Value("i", -1)
    broker_id = ctx.broker_for(BROKER).id
    child = spawn.Process(target=target, args=(ctx.settings.database_url, broker_id, phone, held, release, seen))
    child.start()
    assert held.wait(60), "the child process took the lock"
    return child, release, seen, broker_id


def test_hold_opt_out_until_send_in_other_process_has_made_its_request(ctx) -> None:
    phone = caller(9000)
    child, release, seen, broker_id = _in_child(hold_for_send_in_child, ctx, phone)
    committed = threading.Event()

    def opt_out() -> None:
        with session_scope(ctx.engine) as session:
            store.set_opt_out(session, broker_id=broker_id, phone=phone, opted_out=True, source="test")
        committed.set()

    worker = threading.Thread(target=opt_out)
    worker.start()
    assert not committed.wait(0.5), "the opt-out waits for the send in flight"
    release.set()
    worker.join(30)
    child.join(30)
    assert committed.is_set()
    assert seen.value == 0, "the send saw the number still opted in"


def test_send_sees_opt_out_committed_in_other_process_after_waiting_for_it(ctx) -> None:
    phone = caller(9001)
    child, release, _seen, broker_id = _in_child(change_in_child, ctx, phone)
    result: list[bool] = []

    def send() -> None:
        with optout_lock.hold_for_send(ctx.engine, broker_id, phone, wait=30) as opted_out:
            result.append(opted_out)

    worker = threading.Thread(target=send)
    worker.start()
    time.sleep(0.5)
    assert result == [], "the send waits for the opt-out's transaction"
    release.set()
    worker.join(30)
    child.join(30)
    assert result == [True], "and then sees it"


def test_defer_send_when_opt_out_lock_busy_past_its_wait(ctx) -> None:
    phone = caller(9002)
    child, release, _seen, broker_id = _in_child(change_in_child, ctx, phone)
    try:
        with pytest.raises(NumberBusy), optout_lock.hold_for_send(ctx.engine, broker_id, phone, wait=0.2):
            pass
    finally:
        release.set()
        child.join(30)
