"""CPU of a missed call's two halves in one thread, without HTTP: the webhook's transaction and the opener's send.

    uv run python benchmarks/bench_hot_path.py [--calls 250] [--rounds 6] [--db sqlite|postgres]
        [--compare-init] [--profile FILE]

A context is built as `textback serve` builds it (the load test's brokers and raised caps, the mock Twilio API of
benchmarks/mock_twilio.py), then each round takes `--calls` distinct signed-form missed calls (dial-status
`no-answer`, a new caller each) through the webhook's handler inside its transaction (service.db.session_scope,
as service.worker.run_after_commit runs it), and then sends every opener it queued (service.sender.send_one,
the real Twilio SDK against the mock). Reported: the process's CPU (time.process_time) per webhook transaction
and per send, minimum and median over the rounds.

No server, no threads, no load generator: what the served benchmarks (compare_bare.py, bench_replies.py) add on
top is the HTTP layer and the hand-offs between threads. On this shared machine a served figure moves by 20-30%
from run to run; this one by a few percent, so a change to the handler or the send shows here first.

`--compare-init` alternates rounds between textback's table constructor (service.table_init) and SQLModel's own,
in the same process, and reports both. `--profile FILE` writes a cProfile of one more round.

The database grows by every round's rows, and the gates' counts read the breaker's window (raised caps: up to
every opener of the run), so later rounds cost a little more; alternated rounds share that drift.
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
from urllib.parse import parse_qsl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import compare_bare
import load_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=250, help="missed calls per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TEXTBACK_BENCH_POSTGRES_SERVER",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--compare-init", action="store_true",
                        help="alternate rounds with SQLModel's own constructor for the tables")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more round here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="textback-hot-path-"))
    (workdir / "brokers.yaml").write_text(load_test.BROKERS_YAML)
    policies = load_test.prepare_policies(workdir, shipped=False)
    dbs = (compare_bare.sqlite_databases(workdir) if args.db == "sqlite"
           else compare_bare.postgres_databases(args.pg_url))
    mock, mock_url = load_test.start_mock(workdir)
    try:
        env = compare_bare.textback_env(dbs.textback, workdir, policies, mock_url)
        compare_bare.upgrade(env, workdir)
        os.environ.update(env)
        os.chdir(workdir)
        return measure(args)
    finally:
        load_test.stop(mock)
        dbs.cleanup()


def measure(args: argparse.Namespace) -> int:
    from service import sender, table_init
    from service.context import build_context
    from service.db import session_scope
    from service.settings import Settings
    from service.twilio.webhooks import handle_dial_status

    ctx = build_context(Settings())
    ctx.warm_up()
    maker = compare_bare.FormMaker()

    def webhooks(n: int) -> tuple[float, list[int]]:
        """CPU ms per webhook transaction, and the openers queued."""
        forms = [dict(parse_qsl(f.body)) for f in maker.make(n)]
        queued: list[int] = []
        started = time.process_time()
        for form in forms:
            with session_scope(ctx.engine) as session:
                queued += handle_dial_status(session, ctx, form).send_ids
        return (time.process_time() - started) * 1000 / n, queued

    def sends(ids: list[int]) -> float:
        started = time.process_time()
        for msg_id in ids:
            if sender.send_one(ctx, msg_id) != "sent":
                raise SystemExit(f"text {msg_id} was not sent")
        return (time.process_time() - started) * 1000 / max(len(ids), 1)

    real_plan = table_init._plan
    modes: dict[str, Callable[[type], object]] = {"textback's constructor": real_plan}
    if args.compare_init:
        modes["SQLModel's constructor"] = lambda _cls: None
    try:
        sends(webhooks(50)[1])  # first calls of the process: lazy imports, pools, caches
        figures: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in modes}
        for round_ in range(args.rounds * len(modes)):
            mode = list(modes)[round_ % len(modes)]
            table_init._plan = modes[mode]  # type: ignore[assignment]
            webhook_ms, ids = webhooks(args.calls)
            if len(ids) != args.calls:
                raise SystemExit(f"{len(ids)} openers queued for {args.calls} missed calls")
            send_ms = sends(ids)
            figures[mode][0].append(webhook_ms)
            figures[mode][1].append(send_ms)
            print(f"   round {round_ + 1} ({mode}): webhook transaction {webhook_ms:.2f} ms, send {send_ms:.2f} ms",
                  flush=True)
        table_init._plan = real_plan
        print(f"\n{args.db}, {args.calls} calls per round, CPU per call (process_time), min / median of "
              f"{args.rounds} rounds:")
        for mode, (webhook_ms_all, send_ms_all) in figures.items():
            print(f"  {mode:24} webhook transaction {min(webhook_ms_all):.2f} / "
                  f"{statistics.median(webhook_ms_all):.2f} ms, send {min(send_ms_all):.2f} / "
                  f"{statistics.median(send_ms_all):.2f} ms")
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
            sends(webhooks(args.calls)[1])
            profile.disable()
            profile.dump_stats(str(args.profile))
            print(f"profile of one round: {args.profile}")
    finally:
        table_init._plan = real_plan
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
