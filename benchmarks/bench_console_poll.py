"""What an open console costs the service: the inbox's live poll (GET /console/live, every 3 s per open inbox)
against the JSON API's own list (GET /api/leads, the baseline: the same read of the same leads), per request
and in SQL statements, on a SQLite database holding `--leads` leads of one broker (a page shows 50).

    uv run python benchmarks/bench_console_poll.py [--leads 500] [--rounds 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from litestar.testing import TestClient
from sqlalchemy import event
from sqlmodel import Session

from service.app import create_app
from service.context import build_context
from service.models import InboundMessage, Lead, LeadState, OutboundMessage, utcnow
from service.settings import Settings
from service.web.principal import SESSION_COOKIE, start_session

REPO = Path(__file__).resolve().parent.parent
BROKER = "+14155550100"
USER = "+14155550111"


def seed(ctx, leads: int) -> str:
    """`leads` leads with a text each way (a third of them handed off); the session cookie of Dana's cell."""
    broker = ctx.broker_for(BROKER)
    with Session(ctx.engine) as session:
        for n in range(leads):
            phone = f"+1415556{n:04d}"
            lead = Lead(broker_id=broker.id, phone=phone, state=LeadState.handoff if n % 3 == 0 else LeadState.asking,
                        handoff_reasons=["rate_lock"] if n % 3 == 0 else [], loan_type="refinance",
                        missed_call_at=utcnow())
            session.add(lead)
            session.flush()
            session.add(InboundMessage(message_sid=f"SM{n:032x}", broker_id=broker.id, lead_id=lead.id,
                                       from_phone=phone, body="refi please"))
            session.add(OutboundMessage(broker_id=broker.id, lead_id=lead.id, purpose="opener", template_id="opener",
                                        to_phone=phone, from_phone=BROKER, body="Hi", status="sent",
                                        sent_at=utcnow()))
        token, _ = start_session(session, phone=USER)
        session.commit()
    return token


def timed(client: TestClient, path: str, rounds: int, engine, headers: dict[str, str]) -> tuple[list[float], int, int]:
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    client.get(path, headers=headers)  # warm
    event.listen(engine, "before_cursor_execute", count)
    times = []
    status = 0
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        status = response.status_code
    event.remove(engine, "before_cursor_execute", count)
    return times, statements // rounds, status


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/bench.db",
                            brokers_file=REPO / "brokers.example.yaml", policies_dir=REPO / "policies",
                            spool_dir=Path(tmp) / "spool", guard_cache_dir=Path(tmp) / "guard", run_worker=False)
        ctx = build_context(settings)
        token = seed(ctx, args.leads)
        cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
        with TestClient(app=create_app(ctx=ctx, run_worker=False)) as client:
            etag = client.get("/console/live", headers=cookie).headers["etag"]
            rows = [
                ("GET /api/leads (baseline)", "/api/leads", cookie),
                ("GET /console/live (changed: 200)", "/console/live", cookie),
                ("GET /console/live (unchanged: 304)", "/console/live", {**cookie, "If-None-Match": etag}),
                ("GET /console (the whole inbox)", "/console", cookie),
            ]
            print(f"{args.leads} leads, {args.rounds} rounds each, page of 50")
            print("| request | median ms | p95 ms | SQL statements | status |\n|---|---|---|---|---|")
            baseline = None
            for name, path, headers in rows:
                times, statements, status = timed(client, path, args.rounds, ctx.engine, headers)
                median = statistics.median(times)
                baseline = baseline or median
                p95 = statistics.quantiles(times, n=20)[-1]
                print(f"| {name} | {median:.1f} ({median / baseline:.2f}x) | {p95:.1f} | {statements} | {status} |")
        ctx.close()


if __name__ == "__main__":
    main()
