"""Cost of the per-number opt-out lock on a send: `uv run python benchmarks/bench_send_lock.py [--sends N]`.

Two ratios, each against a baseline measured in the same run on the same database (SQLite always; PostgreSQL
too with `--postgres-url postgresql://...`, in a database of the run's own, dropped at the end):

- lock: `optout_lock.hold_for_send` (take the number's lock shared, re-read the opt-out under it, release)
  against the plain opt-out read a send made before the lock existed;
- send: `sender.send_one` for a borrower text that is checked and locked ("help") against one that is never
  opt-out checked ("optout_confirm"), through the real Twilio SDK to an in-process Messages API (httpx
  MockTransport answering at once, so the lock's share is as large as it can ever be; a real Twilio round trip
  is 100-300 ms). Offline: nothing here touches the network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlmodel import Session

from service import optout_lock, sender
from service.context import build_context
from service.models import OutboundMessage
from service.settings import Settings
from service.twilio.client import TwilioGateway

BROKERS = """
brokers:
  - twilio_number: "+14155550100"
    name: Dana Whitfield
    brokerage: Summit Home Loans
    nmls_id: "123456"
    forward_to: "+14155550111"
    alert_to: ["+14155550112"]
    timezone: America/Los_Angeles
"""
SID = "AC" + "0" * 32


def _messages_api(request: httpx.Request) -> httpx.Response:
    form = dict(httpx.QueryParams(request.content.decode()))
    return httpx.Response(201, json={"sid": "SM" + os.urandom(16).hex(), "status": "queued", "to": form["To"],
                                     "from": form["From"], "body": form["Body"], "account_sid": SID})


def _gateway() -> TwilioGateway:
    gateway = TwilioGateway(account_sid=SID, auth_token="bench", api_url="https://api.twilio.com",
                            lookup_url="https://lookups.twilio.com", timeout=10)
    gateway._http._client = httpx.Client(transport=httpx.MockTransport(_messages_api))
    return gateway


def _median_us(fn: Callable[[int], object], n: int) -> float:
    for i in range(min(20, n)):
        fn(i)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def run(url: str, sends: int, work: Path) -> None:
    brokers = work / "brokers.yaml"
    brokers.write_text(BROKERS)
    settings = Settings(_env_file=None, database_url=url, brokers_file=brokers, policies_dir=ROOT / "policies",
                        twilio_account_sid=SID, twilio_auth_token="bench", run_worker=False)
    ctx = build_context(settings, gateway=_gateway())
    ctx.settings.send_retry_base_seconds = 0
    broker = next(iter(ctx.brokers_by_number.values()))
    phones = [f"+1415555{n:04d}" for n in range(sends + 20)]

    def plain_read(i: int) -> None:
        with ctx.engine.connect() as conn:
            optout_lock.is_opted_out(conn, broker.id, phones[i])

    def locked_read(i: int) -> None:
        with optout_lock.hold_for_send(ctx.engine, broker.id, phones[i], wait=5):
            pass

    def queue(purpose: str) -> list[int]:
        with Session(ctx.engine, expire_on_commit=False) as session:
            rows = [OutboundMessage(broker_id=broker.id, purpose=purpose, template_id="help", to_phone=p,
                                    from_phone=broker.twilio_number, body="bench") for p in phones]
            session.add_all(rows)
            session.commit()
            return [r.id for r in rows if r.id is not None]

    unchecked, checked = queue("optout_confirm"), queue("help")
    read_us, lock_us = _median_us(plain_read, sends), _median_us(locked_read, sends)
    base_us = _median_us(lambda i: sender.send_one(ctx, unchecked[i]), sends)
    send_us = _median_us(lambda i: sender.send_one(ctx, checked[i]), sends)
    name = ctx.engine.dialect.name
    print(f"{name:<10} opt-out read {read_us:8.0f} µs  under the lock {lock_us:8.0f} µs  ratio {lock_us / read_us:5.2f}")
    print(f"{name:<10} send_one unchecked {base_us:6.0f} µs  checked+locked {send_us:8.0f} µs  ratio {send_us / base_us:5.2f}")
    ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--postgres-url", default=os.environ.get("TEXTBACK_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(f"sqlite:///{work / 'bench.db'}", args.sends, work)
        if args.postgres_url:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            from service.db import normalize_url

            base = make_url(normalize_url(args.postgres_url))
            name = f"textback_bench_{os.getpid()}"
            admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                run(base.set(database=name).render_as_string(hide_password=False), args.sends, work)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
