"""The sufficiency report over 100,000 leads: `uv run python benchmarks/bench_report.py [--leads N] [--rounds N]`.

Fills a fresh database with `--leads` realistic missed-call leads over 90 days for five brokers in five time
zones (benchmarks/report_data.py: ~13 rows a lead over five tables) and times `service.report.build_report`
for the last 30 days and for all 90, for every broker and for the busiest one: one warm-up run, then
`--rounds` runs, median and max, and the SQL statements each report sent (a `before_cursor_execute` listener;
SQLite's BEGIN not counted).

Baselines in the same run, on the same window and the same warm database:
- count: `SELECT count(*)` of the window's LeadCase rows (the index alone, nothing sent back);
- fetch: the report's own two queries (`_call_counts`, `_case_rows`), rows fetched, no Python on them.

SQLite always (a file in a temporary folder, as `textback serve` leaves it: no ANALYZE); PostgreSQL too with
`--postgres-url` (default TEXTBACK_BENCH_POSTGRES_URL, else TEXTBACK_TEST_POSTGRES_URL), in a database of the
run's own, dropped at the end, after a VACUUM ANALYZE (what autovacuum does after a bulk load). `--explain`
prints the plans of the report's case query; `--profile` the Python-side cost of one 90-day report.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from benchmarks.report_data import fill, generate
from service import report
from service.db import create_schema, make_engine, normalize_url
from service.models import Broker, LeadCase
from service.sufficiency import load_sufficiency

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the end of the 90 days, and "now" for the report
BUSIEST = "+12125550100"  # a third of the leads


class StatementCounter:
    """SQL statements sent through `engine` while counting (not SQLite's BEGIN, which every transaction sends)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.count = engine, 0
        self.sql: list[str] = []
        self.params: list[Any] = []

    def _seen(self, _conn: object, _cursor: object, statement: str, params: Any, *_: object) -> None:
        if statement.startswith("BEGIN"):
            return
        self.count += 1
        self.sql.append(statement)
        self.params.append(params)

    def __enter__(self) -> StatementCounter:
        self.count, self.sql, self.params = 0, [], []
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def scenarios(brokers: list[Broker]) -> list[tuple[str, list[Broker], datetime]]:
    busiest = [b for b in brokers if b.twilio_number == BUSIEST]
    return [(f"{days} days, {who}", chosen, END - timedelta(days=days))
            for days in (30, 90) for who, chosen in (("5 brokers", brokers), ("1 broker", busiest))]


def count_window(session: Session, brokers: list[Broker], since: datetime, until: datetime) -> int:
    ids = [b.id for b in brokers]
    return int(session.connection().execute(
        select(func.count()).select_from(LeadCase).where(col(LeadCase.broker_id).in_(ids),
                                                         col(LeadCase.missed_at) >= since,
                                                         col(LeadCase.missed_at) < until)).scalar_one())


def fetch_window(session: Session, brokers: list[Broker], since: datetime, until: datetime, rule: Any) -> int:
    """The report's own queries, rows fetched and dropped."""
    ids = [b.id or 0 for b in brokers]
    report._call_counts(session, ids, since, until)
    return len(report._case_rows(session, ids, since, until, END - timedelta(hours=rule.no_reply_after_hours)))


def timed(engine: Engine, fn: Callable[[Session], object], rounds: int) -> tuple[list[float], int, object]:
    """fn once to warm up, then `rounds` times, each in a fresh session: ms per run, statements per run."""
    with Session(engine) as session:
        result = fn(session)
    times = []
    with StatementCounter(engine) as counter:
        for _ in range(rounds):
            with Session(engine) as session:
                start = time.perf_counter()
                result = fn(session)
                times.append((time.perf_counter() - start) * 1000)
    return times, counter.count // rounds, result


def explain(engine: Engine, brokers: list[Broker], since: datetime) -> None:
    """The plan of the report's case query for this window, as the database runs it."""
    rule = load_sufficiency(ROOT / "policies")
    with Session(engine) as session, StatementCounter(engine) as counter:
        fetch_window(session, brokers, since, END, rule)
    sql, params = next((s, p) for s, p in zip(counter.sql, counter.params, strict=True) if "FROM leadcase" in s)
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "
    with engine.connect() as conn:
        for row in conn.exec_driver_sql(prefix + sql, params):
            print("   ", " | ".join(str(v) for v in row))


def run(url: str, leads: int, rounds: int, *, show_plans: bool, profile: bool) -> None:
    engine = make_engine(url)
    create_schema(engine)
    name = engine.dialect.name
    start = time.perf_counter()
    counts = fill(engine, generate(leads, end=END))[1]  # the truths are for the test: let them go before timing
    filled = time.perf_counter() - start
    gc.collect()
    if name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    rows = ", ".join(f"{n} {c:,}" for n, c in sorted(counts.items()))
    print(f"\n{name}: {leads:,} leads filled in {filled:.1f} s ({rows})")
    rule = load_sufficiency(ROOT / "policies")
    with Session(engine) as session:
        brokers = list(session.exec(select_rows(Broker).order_by(col(Broker.id))).all())
        for b in brokers:
            session.expunge(b)
    print("| window | cases | report median ms | max ms | × fetch | × count | fetch ms | count ms | statements |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, chosen, since in scenarios(brokers):
        count_ms, _, cases = timed(engine, lambda s, c=chosen, f=since: count_window(s, c, f, END), rounds)
        fetch_ms, _, _ = timed(engine, lambda s, c=chosen, f=since: fetch_window(s, c, f, END, rule), rounds)
        report_ms, statements, figures = timed(
            engine, lambda s, c=chosen, f=since: report.build_report(s, brokers=c, since=f, until=END, rule=rule,
                                                                       now=END), rounds)
        assert isinstance(figures, dict)
        assert figures["missed_call_leads"] == cases
        med, base, floor = statistics.median(report_ms), statistics.median(fetch_ms), statistics.median(count_ms)
        print(f"| {label} | {cases:,} | {med:.0f} | {max(report_ms):.0f} | {med / base:.2f} | {med / floor:.1f} "
              f"| {base:.0f} | {floor:.1f} | {statements} |")
    if show_plans:
        for label, chosen, since in scenarios(brokers):
            print(f"  plan, {label}:")
            explain(engine, chosen, since)
    if profile:
        with Session(engine) as session:
            profiler = cProfile.Profile()
            profiler.enable()
            report.build_report(session, brokers=brokers, since=END - timedelta(days=90), until=END, rule=rule,
                                now=END)
            profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres-url", default=os.environ.get("TEXTBACK_BENCH_POSTGRES_URL")
                        or os.environ.get("TEXTBACK_TEST_POSTGRES_URL"))
    parser.add_argument("--explain", action="store_true", help="print the case query's plans")
    parser.add_argument("--profile", action="store_true", help="profile one 90-day report")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; {args.rounds} rounds after a warm-up")
    options = {"show_plans": args.explain, "profile": args.profile}
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/report.db", args.leads, args.rounds, **options)
    if args.db in ("postgres", "both") and args.postgres_url:
        base = make_url(normalize_url(args.postgres_url))
        name = f"textback_bench_report_{os.getpid()}"
        from sqlalchemy import create_engine

        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(base.set(database=name).render_as_string(hide_password=False), args.leads, args.rounds, **options)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    elif args.db != "sqlite":
        print("PostgreSQL skipped: no --postgres-url, TEXTBACK_BENCH_POSTGRES_URL or TEXTBACK_TEST_POSTGRES_URL")


if __name__ == "__main__":
    main()
