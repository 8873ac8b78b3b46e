"""Soak: N signed missed calls from distinct callers against a real `textback serve`, the server's memory sampled
every 1000 calls; prints the RSS curve (supervisor and each worker), to show it flat after warm-up.

    uv run python benchmarks/soak.py                          # 20000 calls, SQLite, 1 process
    uv run python benchmarks/soak.py --calls 3000 --every 500
    uv run python benchmarks/soak.py --db postgres --processes 2

Live mode against the mock Twilio API (benchmarks/mock_twilio.py), like benchmarks/load_test.py, whose helpers
(workload, processes, database, policies with raised caps) it reuses. Each sample is taken right after a block of
calls has been answered (the sends of the block may still be going out); a last one after the outbox drained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import load_test as lt  # after the path is set


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process in MiB (/proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def server_pids(proc_pid: int, processes: int) -> list[int]:
    """The process answering (one process) or the supervisor and its workers (uvicorn's helper excluded)."""
    if processes == 1:
        return [proc_pid]
    kids = [pid for pid in lt.child_pids(proc_pid) if (rss_mib(pid) or 0) > 50]
    return [proc_pid, *sorted(kids)]


def block(rng: random.Random, used: set[str], size: int) -> lt.Workload:
    """`size` missed calls (a no-answer dial status each) from callers never seen before."""
    jobs: list[list[lt.Req]] = []
    callers: dict[str, str] = {}
    for _ in range(size):
        caller, broker = lt._number(rng, used), rng.choice(lt.BROKERS)
        call_sid = lt._sid(rng, "CA")
        jobs.append([lt._req("missed", "/twilio/voice/dial-status", lt._dial(call_sid, caller, broker), caller)])
        callers[caller] = broker
    return lt.Workload(jobs=jobs, callers=callers, message_sids=set(), forged_numbers=set(), forged_sids=set(),
                       forged_call_sids=set())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--every", type=int, default=1000, help="calls between two memory samples")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pg-url", default=os.environ.get("LOAD_TEST_PG_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/textback_soak"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-limit", type=float, default=3 * 3600.0)
    args = parser.parse_args(argv)

    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix=f"textback-soak-{args.db}-"))
    (workdir / "brokers.yaml").write_text(lt.BROKERS_YAML)
    policies = lt.prepare_policies(workdir, shipped=False)
    database_url = lt.prepare_database(args.db, workdir, args.pg_url)
    print(f"== soak: {args.calls} missed calls, {args.db}, {args.processes} process(es), concurrency "
          f"{args.concurrency}; logs in {workdir}", flush=True)
    mock, mock_url = lt.start_mock(workdir)
    service = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
        env.update({
            "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_PUBLIC_URL": lt.PUBLIC_URL,
            "TEXTBACK_BROKERS_FILE": str(workdir / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(policies),
            "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), "TEXTBACK_TWILIO_API_URL": mock_url,
            "TEXTBACK_TWILIO_LOOKUP_URL": mock_url, "TWILIO_ACCOUNT_SID": lt.ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": lt.AUTH_TOKEN, "TEXTBACK_LOG_LEVEL": "WARNING",
        })
        service, url = lt.start_service(env, workdir, args.processes, timeout=min(300.0, deadline - time.monotonic()))
        pids = server_pids(service.pid, args.processes)
        names = ["supervisor", *(f"worker {i + 1}" for i in range(len(pids) - 1))] if args.processes > 1 else ["serve"]
        print(f"{'calls':>7} {'s':>7} {'non-200':>8}  " + "  ".join(f"{n + ' MiB':>14}" for n in names), flush=True)

        def sample(done: int, started: float, failed: int) -> None:
            sizes = [rss_mib(pid) for pid in pids]
            cells = "  ".join(f"{s:>14.0f}" if s is not None else f"{'gone':>14}" for s in sizes)
            print(f"{done:>7} {time.monotonic() - started:>7.1f} {failed:>8}  {cells}", flush=True)

        rng, used, done, failed = random.Random(args.seed), set(), 0, 0
        started = time.monotonic()
        sample(0, started, 0)
        while done < args.calls and time.monotonic() < deadline:
            workload = block(rng, used, min(args.every, args.calls - done))
            asyncio.run(lt.fire(url, workload, args.concurrency, deadline))
            failed += sum(r.status != 200 for r in workload.requests)
            done += len(workload.requests)
            sample(done, started, failed)
        lt.wait_drained(database_url, mock_url, deadline)
        print("after the outbox drained:", flush=True)
        sample(done, started, failed)
    finally:
        if service is not None:
            lt.stop(service)
        lt.stop(mock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
