"""CPU per borrower reply in `textback serve`, against CPU per missed call in the same process and run.

    uv run python benchmarks/bench_replies.py [--db sqlite|postgres] [--callers 300] [--rounds 2]
        [--concurrency 8] [--profile FILE]

Each round starts from a fresh database, with the mock Twilio API (`mock_twilio.py`) and `textback serve` (one
process, the load test's brokers and raised caps), and takes two measured steps:

1. missed calls: one signed dial-status `no-answer` from each of `--callers` distinct callers;
2. replies: one signed SMS from each of those callers, a typical answer to the opener (the load test's
   `REPLIES`: a loan type, a timeline, "call me tomorrow", "not yet").

For each step: the CPU (user + system) of the service's whole process tree from its first request until the
service is idle again and every reply is processed (`inboundmessage.status`), divided by the calls or replies.
The reply figure therefore holds everything a reply causes: its webhook, the rules, the lead's update, and the
text or alert it queues and sends. `--profile FILE` attaches py-spy (`uvx py-spy`, GIL-held samples, every
thread) to the replies of the last round, in py-spy's raw format.

Both figures come from the same process in the same run, so their ratio holds on a noisy machine where the
absolute milliseconds do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import compare_bare as cb  # after the path is set
import load_test as lt

SMS_PATH = "/twilio/sms"


async def post_all(base: str, requests: list[tuple[str, str, str]], concurrency: int) -> None:
    """POST every (path, body, signature), `concurrency` in flight; anything but 200 stops the benchmark."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        async def one(path: str, body: str, signature: str) -> None:
            async with gate:
                answer = await client.post(path, content=body, headers={
                    "X-Twilio-Signature": signature, "Content-Type": cb.CONTENT_TYPE})
                if answer.status_code != 200:
                    raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")

        await asyncio.gather(*(one(*request) for request in requests))


def replies_for(forms: list[cb.SignedForm], tag: str) -> list[tuple[str, str, str]]:
    """One signed reply from each missed call's caller to its broker."""
    out = []
    for i, form in enumerate(forms):
        fields = dict(parse_qsl(form.body))
        request = lt._req("reply", SMS_PATH, lt._sms(f"SM{tag}{i:024x}", fields["From"], fields["To"],
                                                      lt.REPLIES[i % len(lt.REPLIES)]), "")
        out.append((SMS_PATH, urlencode(request.params), request.signature))
    return out


def unprocessed(database_url: str) -> Callable[[], int]:
    """Replies stored and not processed yet."""
    return cb.row_counter(database_url, "inboundmessage WHERE status <> 'processed'")


def measured(proc: subprocess.Popen[bytes], base: str, requests: list[tuple[str, str, str]], concurrency: int,
             waiting: Callable[[], int]) -> tuple[float, float]:
    """CPU seconds of the service's process tree and wall seconds, from the first request until it is idle and
    `waiting()` (replies not processed yet) is 0."""
    cpu, started = cb.cpu_seconds(proc.pid), time.monotonic()
    asyncio.run(post_all(base, requests, concurrency))
    while True:
        cb.wait_idle(proc.pid, timeout=300, extra=waiting)
        if waiting() == 0 or time.monotonic() - started > 600:
            break
    return cb.cpu_seconds(proc.pid) - cpu, time.monotonic() - started


def one_round(kind: str, args: argparse.Namespace, profile: Path | None) -> tuple[float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="textback-replies-"))
    (workdir / "brokers.yaml").write_text(lt.BROKERS_YAML)
    policies = lt.prepare_policies(workdir, shipped=False)
    dbs = cb.sqlite_databases(workdir) if kind == "sqlite" else cb.postgres_databases(args.pg_url)
    procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    try:
        mock, mock_url = lt.start_mock(workdir)
        procs.append(mock)
        env = cb.textback_env(dbs.textback, workdir, policies, mock_url)
        cb.upgrade(env, workdir)
        proc, url = lt.start_service(env, workdir, 1, timeout=args.start_timeout)
        procs.append(proc)
        base = url.split("/twilio/")[0]
        maker = cb.FormMaker()
        warm = maker.make(20)  # first requests of a process (pools, lazy paths) are not measured
        asyncio.run(post_all(base, [(cb.PATH, f.body, f.signature) for f in warm], args.concurrency))
        asyncio.run(post_all(base, replies_for(warm, maker.tag + "w"), args.concurrency))
        waiting = unprocessed(dbs.textback)
        measured(proc, base, [], args.concurrency, waiting)

        forms = maker.make(args.callers)
        calls = [(cb.PATH, f.body, f.signature) for f in forms]
        call_cpu, call_wall = measured(proc, base, calls, args.concurrency, lambda: 0)
        replies = replies_for(forms, maker.tag)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(["uvx", "py-spy", "record", "--gil", "--threads", "--format", "raw", "-r", "200",
                                    "-o", str(profile), "--pid", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        reply_cpu, reply_wall = measured(proc, base, replies, args.concurrency, waiting)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        left = waiting()
        if left:
            raise SystemExit(f"{left} replies were not processed")
        sent = len(httpx.get(mock_url + "/_mock/messages", timeout=30).json())
        per_call, per_reply = call_cpu * 1000 / len(calls), reply_cpu * 1000 / len(replies)
        print(f"   {kind}: missed calls {per_call:6.2f} ms CPU each ({call_wall:.1f} s); replies {per_reply:6.2f} ms "
              f"CPU each ({reply_wall:.1f} s); {sent} texts sent in all", flush=True)
        return per_call, per_reply
    finally:
        for proc_ in reversed(procs):
            lt.stop(proc_)
        dbs.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--callers", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", type=Path, help="py-spy raw samples of the last round's replies")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--pg-url", default=os.environ.get("TEXTBACK_BENCH_POSTGRES_SERVER",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    calls, replies = [], []
    for round_ in range(1, args.rounds + 1):
        per_call, per_reply = one_round(args.db, args, args.profile if round_ == args.rounds else None)
        calls.append(per_call)
        replies.append(per_reply)
    call, reply = statistics.median(calls), statistics.median(replies)
    print(f"median of {args.rounds}: missed call {call:.2f} ms CPU, reply {reply:.2f} ms CPU "
          f"({reply / call:.1f}x a missed call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
