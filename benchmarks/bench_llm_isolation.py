"""Opener latency while LLM calls are stuck: a missed call must not wait for replies the LLM is reading.

    uv run python benchmarks/bench_llm_isolation.py                       # both LLM modes, 3 rounds each
    uv run python benchmarks/bench_llm_isolation.py --mode rate-limited --rounds 5
    uv run python benchmarks/bench_llm_isolation.py --service-root /path/to/other/checkout   # e.g. the old code

It starts the mock Twilio API (`mock_twilio.py`, in this process), a mock LLM endpoint on loopback and
`textback serve` (one process, SQLite, dry-run off) with the LLM configured, then measures, in the same run:

- baseline: the time from a missed call's dial-status webhook to its opener reaching the Messages API, one
  missed call at a time, with no reply in flight;
- loaded: the same for a missed call fired while eight replies that only the LLM can read are in flight, the
  LLM answering each call with `429` and `Retry-After: 118` (`rate-limited`, what the issue reproduced) or
  never answering (`hang`: every call runs to its deadline).

It prints the median and worst latency of each and the ratio loaded / baseline, plus the longest LLM call
the service logged (`elapsed_ms` of "llm extraction failed"). Everything stays on loopback; each request is a
fresh connection, as Twilio's are. `--service-root` runs the service from another checkout (its `service`
package first on PYTHONPATH) so a before/after comparison uses the same load generator.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.load_test import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BROKERS_YAML,
    PUBLIC_URL,
    prepare_policies,
    start_service,
    stop,
)
from benchmarks.mock_twilio import MockTwilio
from service.replies.llm_fake import error_json
from service.twilio import fake

BROKER = "+14155550100"
UNSETTLED = "well it kind of depends on a few things honestly"  # the rules leave this to the LLM
REPLIES_IN_FLIGHT = 8


class MockLLM:
    """A chat-completions endpoint that is rate-limited (429, Retry-After: 118) or hangs."""

    def __init__(self) -> None:
        self.mode = "rate-limited"
        self.calls = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner._lock:
                    owner.calls += 1
                if owner.mode == "hang":
                    time.sleep(130)
                body = json.dumps(error_json("Rate limit reached", "requests", "rate_limit_exceeded")).encode()
                try:
                    self.send_response(429)
                    self.send_header("content-type", "application/json")
                    self.send_header("retry-after", "118")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its deadline): nothing to answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


class Bench:
    def __init__(self, url: str, mock: MockTwilio) -> None:
        self.url, self.mock = url, mock
        self._numbers = itertools.count(1)
        self._sids = itertools.count(1)

    def number(self) -> str:
        return f"+1415556{next(self._numbers):04d}"

    def post(self, path: str, params: dict[str, str]) -> None:
        headers = fake.signature_headers(token=AUTH_TOKEN, public_url=PUBLIC_URL, path=path, form=params)
        with httpx.Client(timeout=60) as client:  # a fresh connection, as Twilio's
            client.post(self.url + path, data=params, headers=headers)

    def missed_call(self, caller: str) -> None:
        sid = f"CA{next(self._sids):032x}"
        self.post("/twilio/voice/dial-status",
                  fake.dial_status_form(sid, caller, BROKER, "no-answer", account_sid=ACCOUNT_SID))

    def reply(self, caller: str) -> None:
        sid = f"SM{next(self._sids):032x}"
        self.post("/twilio/sms", fake.sms_form(UNSETTLED, caller, BROKER, sid=sid, account_sid=ACCOUNT_SID))

    def opener_at(self, caller: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.mock.creates():
                if request.form.get("To") == caller:
                    return request.received_at
            time.sleep(0.01)
        return None

    def opener_latency(self, timeout: float = 180.0) -> float:
        caller = self.number()
        started = time.time()
        self.missed_call(caller)
        arrived = self.opener_at(caller, timeout)
        return (arrived - started) if arrived is not None else float("inf")


def loaded_round(bench: Bench, llm: MockLLM, wait: float) -> float:
    repliers = [bench.number() for _ in range(REPLIES_IN_FLIGHT)]
    for caller in repliers:  # each had an opener first, so its reply is a conversation the LLM must read
        bench.missed_call(caller)
        bench.opener_at(caller, 60)
    calls_before = llm.calls
    threads = [threading.Thread(target=bench.reply, args=(caller,), daemon=True) for caller in repliers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while llm.calls == calls_before and time.monotonic() < deadline:  # the LLM calls are in flight
        time.sleep(0.01)
    latency = bench.opener_latency()
    for thread in threads:
        thread.join(wait)
    return latency


def longest_llm_call(log_path: Path) -> float | None:
    longest = None
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "llm extraction failed" and "elapsed_ms" in event:
            longest = max(longest or 0, event["elapsed_ms"] / 1000)
    return longest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["rate-limited", "hang", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=int, default=5, help="missed calls measured with nothing in flight")
    parser.add_argument("--llm-timeout", type=float, default=8.0)
    parser.add_argument("--service-root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    modes = ["rate-limited", "hang"] if args.mode == "both" else [args.mode]

    workdir = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    (workdir / "brokers.yaml").write_text(BROKERS_YAML)
    llm = MockLLM()
    mock = MockTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    env.update({
        "PYTHONPATH": str(args.service_root.resolve()),
        "TEXTBACK_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}", "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
        "TEXTBACK_BROKERS_FILE": str(workdir / "brokers.yaml"),
        "TEXTBACK_POLICIES_DIR": str(prepare_policies(workdir, shipped=False)),
        "TEXTBACK_PROMPTS_DIR": str(args.service_root.resolve() / "prompts"),
        "TEXTBACK_TWILIO_API_URL": mock.url, "TEXTBACK_TWILIO_LOOKUP_URL": mock.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.url,
        "TEXTBACK_LLM_TIMEOUT_SECONDS": str(args.llm_timeout), "TEXTBACK_LOG_LEVEL": "INFO",
    })
    proc, url = start_service_from(env, workdir, args.service_root)
    try:
        bench = Bench(url, mock)
        bench.opener_latency()  # warm-up, not counted
        baseline = [bench.opener_latency() for _ in range(args.baseline)]
        print(f"service {args.service_root}; LLM deadline {args.llm_timeout:g} s; workdir {workdir}", flush=True)
        print(f"baseline (nothing in flight): median {statistics.median(baseline) * 1000:.0f} ms, "
              f"worst {max(baseline) * 1000:.0f} ms over {len(baseline)}", flush=True)
        for mode in modes:
            llm.mode = mode
            loaded = [loaded_round(bench, llm, wait=args.llm_timeout + 10) for _ in range(args.rounds)]
            ratio = statistics.median(loaded) / statistics.median(baseline)
            print(f"{mode:>12}: {REPLIES_IN_FLIGHT} LLM replies in flight: median "
                  f"{statistics.median(loaded) * 1000:.0f} ms, worst {max(loaded) * 1000:.0f} ms over {len(loaded)} "
                  f"rounds; ratio to baseline {ratio:.2f}", flush=True)
        longest = longest_llm_call(workdir / "service.log")
        print(f"longest LLM call logged: {longest:.2f} s" if longest is not None else
              "longest LLM call logged: (this service does not log elapsed_ms)", flush=True)
    finally:
        stop(proc)
        mock.stop()
        llm.stop()
    return 0


def start_service_from(env: dict[str, str], workdir: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`textback serve` from `root` (its service package first on PYTHONPATH)."""
    if root.resolve() == REPO:
        return start_service(env, workdir, 1, timeout=180)
    import benchmarks.load_test as load_test

    original = load_test.textback_command
    load_test.textback_command = lambda: [sys.executable, "-c", "from service.cli import main; main()"]
    try:
        return start_service(env, workdir, 1, timeout=180)
    finally:
        load_test.textback_command = original


if __name__ == "__main__":
    raise SystemExit(main())
