"""textback's missed-call webhook against a bare Litestar app doing the least the job needs, side by side.

    uv run python benchmarks/compare_bare.py                  # SQLite 1 process and PostgreSQL 2 processes
    uv run python benchmarks/compare_bare.py --quick          # a short smoke run (3 s windows)
    uv run python benchmarks/compare_bare.py --db sqlite --seconds 20 --rounds 3 --connections 1,8,32
    uv run python benchmarks/compare_bare.py --load httpx     # the Python load generator even if wrk is there

The baseline is benchmarks/bare_app.py (parse Twilio's form, check X-Twilio-Signature with the Twilio SDK's
RequestValidator, insert one row with SQLModel, answer TwiML), served by uvicorn exactly as `textback serve`
serves (service.server.run: the same protocol class, limits, keep-alive and `--workers` supervisor), with the
same number of processes. textback runs as `textback serve` against the mock Twilio API
(benchmarks/mock_twilio.py, TEXTBACK_TWILIO_API_URL), so every missed call's opener is really sent and its
cost counts. Databases: SQLite files in a temporary folder (1 process), and on PostgreSQL (`--workers 2`) two
fresh databases on --pg-url's server, created for the run (`textback db upgrade` first) and dropped after.

Load: every request is a distinct, correctly signed missed call (a dial-status `no-answer` callback with its
own CallSid and caller), all signed before the timing starts. With `wrk` installed (apt-get install wrk) it
drives the load through a Lua script reading the pre-signed forms; otherwise (or `--load httpx`) a bounded
asyncio + httpx generator: N keep-alive connections, one request in flight on each.

For each connection count (1, 8, 32) the two servers take turns: bare, textback, bare, textback (--rounds
each), a fixed window each (--seconds). After each window the harness waits until the server is idle again
(textback sends its openers after answering) so the next window starts clean. Reported per server: requests/s
(answered in the window), p50 and p99 latency, and CPU per request: the server's processes' user+sys CPU
(every process of the tree, from /proc/<pid>/stat, reaped children included) from the window's start until it
is idle again, divided by the missed calls it stored (rows in the database, so requests cut off by the end of
a window count where their work went). Ratios are textback / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import load_test
from load_test import ACCOUNT_SID, AUTH_TOKEN, BROKERS, BROKERS_YAML, PUBLIC_URL

from service.twilio import fake
from service.twilio.signature import sign

PATH = "/twilio/voice/dial-status"
CONTENT_TYPE = "application/x-www-form-urlencoded"
AREA_CODES = load_test.AREA_CODES
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ("bare", "textback")


# ----------------------------------------------------------------------------------------------- the forms

@dataclass(frozen=True)
class SignedForm:
    body: str  # urlencoded, exactly what is posted
    signature: str


class FormMaker:
    """Distinct missed calls for the whole run: a CallSid and a caller never used before, signed."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(4)
        self.count = 0

    def caller(self, n: int) -> str:
        area = AREA_CODES[n % len(AREA_CODES)]
        rest = n // len(AREA_CODES)
        return f"+1{area}{200 + (rest // 10000) % 800}{rest % 10000:04d}"

    def make(self, n: int) -> list[SignedForm]:
        forms = []
        for _ in range(n):
            i = self.count
            self.count += 1
            call_sid = f"CA{self.tag}{i:024x}"
            form = fake.dial_status_form(call_sid, self.caller(i), BROKERS[i % len(BROKERS)], "no-answer",
                                         account_sid=ACCOUNT_SID, DialCallSid=f"CA{self.tag}{i:024x}"[::-1][:32],
                                         DialCallDuration="0")
            forms.append(SignedForm(body=urlencode(form),
                                    signature=sign(token=AUTH_TOKEN, url=PUBLIC_URL + PATH, params=form)))
        return forms


# ------------------------------------------------------------------------------------------- load generators

@dataclass
class LoadResult:
    sent: int  # answered requests
    ok: int  # answered 200
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0  # transport errors and non-200 answers
    exhausted: bool = False  # the pre-signed forms ran out (httpx: stopped early; wrk: some were repeated)


def percentile(values: Sequence[float], q: float) -> float:
    return load_test.percentile(list(values), q)


async def _httpx_load(url: str, forms: list[SignedForm], connections: int, seconds: float) -> LoadResult:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    statuses = {"ok": 0, "errors": 0}
    it = iter(forms)
    exhausted = False
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        # Open the connections before the window starts.
        await asyncio.gather(*(client.get("/nothing-here") for _ in range(connections)))
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal exhausted
            while time.perf_counter() < deadline:
                form = next(it, None)
                if form is None:
                    exhausted = True
                    return
                started = time.perf_counter()
                try:
                    response = await client.post(PATH, content=form.body, headers={
                        "Content-Type": CONTENT_TYPE, "X-Twilio-Signature": form.signature})
                except httpx.HTTPError:
                    statuses["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses["ok" if response.status_code == 200 else "errors"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadResult(sent=len(latencies), ok=statuses["ok"], seconds=elapsed, p50_ms=percentile(latencies, 50) * 1000,
                      p99_ms=percentile(latencies, 99) * 1000, errors=statuses["errors"], exhausted=exhausted)


def httpx_load(url: str, forms: list[SignedForm], connections: int, seconds: float) -> LoadResult:
    return asyncio.run(_httpx_load(url, forms, connections, seconds))


WRK_LUA = r"""
-- Each wrk thread posts its own share of the pre-signed forms (lines "signature<TAB>body"), each once.
local threads, count = {}, 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end
local forms, nth = {}, 0
function init(args)
  local step, n = tonumber(args[2]), 0
  for line in io.lines(args[1]) do
    if n % step == tid then
      local tab = string.find(line, "\t", 1, true)
      local headers = {["Content-Type"] = "application/x-www-form-urlencoded",
                       ["X-Twilio-Signature"] = string.sub(line, 1, tab - 1)}
      table.insert(forms, wrk.format("POST", "/twilio/voice/dial-status", headers, string.sub(line, tab + 1)))
    end
    n = n + 1
  end
end
function request()
  nth = nth + 1
  return forms[(nth - 1) % #forms + 1]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "status": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status, e.connect,
    e.read, e.write, e.timeout))
end
"""


def wrk_load(url: str, forms: list[SignedForm], connections: int, seconds: float, workdir: Path) -> LoadResult:
    threads = min(2, connections)
    forms_file = workdir / "forms.tsv"
    forms_file.write_text("".join(f"{f.signature}\t{f.body}\n" for f in forms))
    script = workdir / "forms.lua"
    script.write_text(WRK_LUA)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "30s",
           "-s", str(script), url, "--", str(forms_file), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    errors = data["status"] + data["connect"] + data["read"] + data["write"] + data["timeout"]
    return LoadResult(sent=data["requests"], ok=data["requests"] - data["status"], seconds=data["duration_us"] / 1e6,
                      p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors,
                      exhausted=data["requests"] > len(forms))


# ------------------------------------------------------------------------------------------- processes, CPU

def descendants(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's supervisor, its workers, their helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """user + sys CPU of the tree under `root`, reaped children included (utime, stime, cutime, cstime)."""
    ticks = 0
    for pid in descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(v) for v in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def wait_idle(root: int, *, timeout: float, extra: Callable[[], int] | None = None) -> float:
    """Wait until the tree uses under ~5% of a core per process for 1 s (and `extra()`, e.g. the mock's count of
    sends, stops moving); returns the seconds waited."""
    started = time.monotonic()
    previous = cpu_seconds(root)
    last_extra = extra() if extra else 0
    quiet = 0
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = cpu_seconds(root)
        current_extra = extra() if extra else 0
        busy = now - previous > 0.025 * len(descendants(root)) or current_extra != last_extra
        quiet = 0 if busy else quiet + 1
        previous, last_extra = now, current_extra
        if quiet >= 2:
            break
    return time.monotonic() - started


def wait_answering(url: str, proc: subprocess.Popen[bytes], path: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}; see {log}")
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    load_test.stop(proc)
    raise SystemExit(f"server at {url} did not answer in {timeout:.0f} s; see {log}")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    count_rows: Callable[[], int]


def spawn_bare(database_url: str, workdir: Path, processes: int) -> tuple[subprocess.Popen[bytes], str]:
    """The bare app started on a free port (not waited for): the process and its URL."""
    port = load_test.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "BARE_"))}
    env.update({"BARE_DATABASE_URL": database_url, "BARE_AUTH_TOKEN": AUTH_TOKEN, "BARE_PUBLIC_URL": PUBLIC_URL})
    # Started like the `textback` script: a main module that imports nothing heavy, so uvicorn's `--workers`
    # children answer its health check (5 s) at once and import the app after (a busy box takes longer than 5 s
    # to import Litestar, and the supervisor would kill and restart the worker forever).
    launcher = (f"import sys; sys.path[:0] = [{str(REPO / 'benchmarks')!r}, {str(REPO)!r}]; "
                "from bare_app import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", launcher, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(processes)],
                            env=env, cwd=workdir, stdout=(workdir / "bare.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def start_bare(database_url: str, workdir: Path, processes: int,
               timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    proc, url = spawn_bare(database_url, workdir, processes)
    wait_answering(url, proc, "/", timeout, workdir / "bare.log")
    return proc, url


def textback_env(database_url: str, workdir: Path, policies: Path, mock_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_", "BARE_"))}
    env.update({
        "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
        "TEXTBACK_BROKERS_FILE": str(workdir / "brokers.yaml"), "TEXTBACK_POLICIES_DIR": str(policies),
        "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), "TEXTBACK_TWILIO_API_URL": mock_url,
        "TEXTBACK_TWILIO_LOOKUP_URL": mock_url, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TEXTBACK_LOG_LEVEL": "WARNING", "TEXTBACK_METRICS_TOKEN": METRICS_TOKEN,
    })
    return env


def row_counter(database_url: str, table: str) -> Callable[[], int]:
    from sqlalchemy import create_engine, text

    url = database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608

    return count


# ------------------------------------------------------------------------------------------------ databases

@dataclass
class Databases:
    textback: str
    bare: str
    cleanup: Callable[[], None] = lambda: None


def sqlite_databases(workdir: Path) -> Databases:
    return Databases(textback=f"sqlite:///{workdir / 'textback.db'}", bare=f"sqlite:///{workdir / 'bare.db'}")


def postgres_databases(server_url: str) -> Databases:
    import psycopg

    parts = urlsplit(server_url)
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    base = f"textback_cmp_{os.getpid()}_{secrets.token_hex(3)}"
    names = [base, base + "_bare"]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')

    def cleanup() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    urls = [urlunsplit(parts._replace(path="/" + name, scheme="postgresql")) for name in names]
    return Databases(textback=urls[0], bare=urls[1], cleanup=cleanup)


def upgrade(env: dict[str, str], workdir: Path) -> None:
    out = subprocess.run([*load_test.textback_command(), "db", "upgrade"], env=env, cwd=workdir,
                         capture_output=True, text=True, check=False, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"textback db upgrade failed: {out.stdout[-600:]} {out.stderr[-600:]}")


# ----------------------------------------------------------------------------------------------- measuring

@dataclass
class Window:
    """One server, one connection count, one round."""

    setup: str
    server: str
    connections: int
    round: int
    load: LoadResult
    cpu_seconds: float
    stored: int  # rows the server stored during the window (missed calls handled)
    sends: int  # Messages API requests the mock saw (textback)
    drain_seconds: float
    turn_held_seconds: float | None = None  # textback on SQLite: seconds the write turn was held (its /metrics)
    turns: int | None = None  # and the write transactions that took it

    @property
    def turn_ms(self) -> float:
        """Write turn held per missed call: on SQLite the rate cannot pass 1000 / this."""
        if self.turn_held_seconds is None or not self.stored:
            return math.nan
        return self.turn_held_seconds * 1000 / self.stored

    @property
    def rate(self) -> float:
        return self.load.ok / self.load.seconds if self.load.seconds else math.nan

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.stored if self.stored else math.nan


@dataclass
class Summary:
    """The rounds of one server at one connection count, combined."""

    rate: float  # mean of the rounds' requests/s
    p50_ms: float  # mean of the rounds' p50
    p99_ms: float  # mean of the rounds' p99
    cpu_ms: float  # total CPU / total stored
    rounds: int


def summarize(windows: Iterable[Window]) -> Summary:
    ws = list(windows)
    if not ws:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    stored = sum(w.stored for w in ws)
    return Summary(rate=statistics.fmean(w.rate for w in ws), p50_ms=statistics.fmean(w.load.p50_ms for w in ws),
                   p99_ms=statistics.fmean(w.load.p99_ms for w in ws),
                   cpu_ms=sum(w.cpu_seconds for w in ws) * 1000 / stored if stored else math.nan, rounds=len(ws))


def ratio(textback: float, bare: float) -> float:
    """textback / bare; NaN when either is missing or the baseline is zero."""
    if math.isnan(textback) or math.isnan(bare) or bare == 0:
        return math.nan
    return textback / bare


def _num(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


COLUMNS = ("setup", "conns", "req/s bare", "req/s textback", "x", "p50 ms bare", "p50 ms textback", "x",
           "p99 ms bare", "p99 ms textback", "x", "CPU ms/req bare", "CPU ms/req textback", "x")


def table_rows(summaries: dict[tuple[str, int], dict[str, Summary]]) -> list[list[str]]:
    """One row per (setup, connections): each figure for bare and textback and the ratio textback / bare."""
    rows = []
    for (setup, connections), pair in summaries.items():
        bare, tb = pair["bare"], pair["textback"]
        row = [setup, str(connections)]
        for attr, digits in (("rate", 0), ("p50_ms", 1), ("p99_ms", 1), ("cpu_ms", 2)):
            b, t = getattr(bare, attr), getattr(tb, attr)
            row += [_num(b, digits), _num(t, digits), _num(ratio(t, b), 2)]
        rows.append(row)
    return rows


def format_table(rows: list[list[str]]) -> str:
    """A Markdown table of `table_rows`, numbers right-aligned."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 1) + (":" if i > 1 else "-") for i, w in enumerate(widths)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(v.ljust(w) if i < 2 else v.rjust(w)
                                        for i, (v, w) in enumerate(zip(row, widths, strict=True))) + " |")
    return "\n".join(lines)


METRICS_TOKEN = "compare-bare-metrics-token"  # a benchmark value, for textback's /metrics


def write_turns(server: Server) -> tuple[float, float] | None:
    """textback's SQLite write turn from its /metrics: (turns, held seconds); None for bare or PostgreSQL."""
    if server.name != "textback":
        return None
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    answer.raise_for_status()
    found = {sample.name: sample.value for family in text_string_to_metric_families(answer.text)
             for sample in family.samples}
    if "textback_sqlite_write_turns_total" not in found:
        return None
    return found["textback_sqlite_write_turns_total"], found["textback_sqlite_write_turn_held_seconds_total"]


def measure_window(setup: str, server: Server, connections: int, round_: int, forms: list[SignedForm], args: argparse.Namespace,
                   workdir: Path, sends: Callable[[], int], *, seconds: float | None = None) -> Window:
    seconds = args.seconds if seconds is None else seconds
    wait_idle(server.proc.pid, timeout=30)
    rows_before, sends_before = server.count_rows(), sends()
    turns_before = write_turns(server)
    cpu_before = cpu_seconds(server.proc.pid)
    if args.load == "wrk":
        load = wrk_load(server.url, forms, connections, seconds, workdir)
    else:
        load = httpx_load(server.url, forms, connections, seconds)
    drain = wait_idle(server.proc.pid, timeout=args.drain_limit, extra=sends if server.name == "textback" else None)
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    turns_after = write_turns(server)
    held = turns = None
    if turns_before is not None and turns_after is not None:
        held, turns = turns_after[1] - turns_before[1], int(turns_after[0] - turns_before[0])
    return Window(setup=setup, server=server.name, connections=connections, round=round_, load=load, cpu_seconds=cpu,
                  stored=server.count_rows() - rows_before, sends=sends() - sends_before, drain_seconds=drain,
                  turn_held_seconds=held, turns=turns)


def run_setup(kind: str, processes: int, args: argparse.Namespace, maker: FormMaker) -> list[Window]:
    label = f"{'PostgreSQL' if kind == 'postgres' else 'SQLite'} {processes}p"
    workdir = Path(tempfile.mkdtemp(prefix=f"textback-compare-{kind}-"))
    (workdir / "brokers.yaml").write_text(BROKERS_YAML)
    policies = load_test.prepare_policies(workdir, shipped=False)
    dbs = sqlite_databases(workdir) if kind == "sqlite" else postgres_databases(args.pg_url)
    print(f"== {label}: logs in {workdir}", flush=True)
    procs: list[subprocess.Popen[Any]] = []
    windows: list[Window] = []
    finished = False
    try:
        mock, mock_url = load_test.start_mock(workdir)
        procs.append(mock)
        env = textback_env(dbs.textback, workdir, policies, mock_url)
        upgrade(env, workdir)
        from bare_app import BareModel, bare_engine

        engine = bare_engine(dbs.bare)
        BareModel.metadata.create_all(engine)  # before the workers start, so they never race to create it
        engine.dispose()
        bare_proc, bare_url = start_bare(dbs.bare, workdir, processes, timeout=args.start_timeout)
        procs.append(bare_proc)
        textback_proc, textback_url = load_test.start_service(env, workdir, processes, timeout=args.start_timeout)
        procs.append(textback_proc)
        servers = {
            "bare": Server("bare", bare_proc, bare_url, row_counter(dbs.bare, "bare_call")),
            "textback": Server("textback", textback_proc, textback_url, row_counter(dbs.textback, "lead")),
        }

        def sends() -> int:
            records = httpx.get(mock_url + "/_mock/messages", timeout=30).json()
            return len(records)

        best: dict[str, float] = {}
        if args.warmup > 0:  # first requests of a process (lazy imports, pools, caches) are not measured
            for name in SERVERS:
                warm = measure_window(label, servers[name], 8, 0, maker.make(int(args.max_rate * args.warmup)),
                                      args, workdir, sends, seconds=args.warmup)
                best[name] = warm.rate
                print(f"   {name:8} warm-up: {warm.rate:8.1f} req/s ({warm.stored} stored)", flush=True)
        for connections in args.connections:
            for round_ in range(1, args.rounds + 1):
                for name in SERVERS:
                    # Enough distinct forms for 3x the best rate seen (a rate at fewer connections is lower).
                    per_second = min(args.max_rate, max(3 * best.get(name, args.max_rate), 300.0))
                    forms = maker.make(int(per_second * args.seconds) + connections)
                    w = measure_window(label, servers[name], connections, round_, forms, args, workdir, sends)
                    best[name] = max(best.get(name, 0.0), w.rate)
                    windows.append(w)
                    print(f"   {name:8} conns {connections:2} round {round_}: {w.rate:8.1f} req/s, p50 "
                          f"{w.load.p50_ms:7.1f} ms, p99 {w.load.p99_ms:7.1f} ms, CPU {w.cpu_ms:6.2f} ms/req "
                          f"({w.stored} stored, {w.sends} sent, {w.load.errors} errors, drain {w.drain_seconds:.1f} s"
                          f"{', FORMS RAN OUT' if w.load.exhausted else ''})"
                          + (f"; write turn {w.turn_ms:.2f} ms/call over {w.turns / w.stored:.1f} turns"
                             f" (at most {1000 / w.turn_ms:.0f} calls/s)" if w.turns and w.stored else ""),
                          flush=True)
        finished = True
    finally:
        for proc in reversed(procs):
            load_test.stop(proc)
        dbs.cleanup()
        if finished and not args.keep:  # on a failure the logs stay for reading
            shutil.rmtree(workdir, ignore_errors=True)
    return windows


def summaries_of(windows: list[Window]) -> dict[tuple[str, int], dict[str, Summary]]:
    keys = list(dict.fromkeys((w.setup, w.connections) for w in windows))
    return {key: {name: summarize(w for w in windows if (w.setup, w.connections) == key and w.server == name)
                  for name in SERVERS} for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per server and connection count")
    parser.add_argument("--connections", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--load", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s windows, 2 rounds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per server first")
    parser.add_argument("--max-rate", type=float, default=3000.0,
                        help="forms signed per second of window at most (the pool is sized from the best rate seen)")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds a server may take to start (a busy box: minutes for textback's workers)")
    parser.add_argument("--drain-limit", type=float, default=120.0, help="seconds to wait for a server to go idle")
    parser.add_argument("--pg-url", default=os.environ.get("TEXTBACK_BENCH_POSTGRES_SERVER",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)")
    parser.add_argument("--json", type=Path, help="also write every window's figures here")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request of the harness's own calls
    if args.quick:
        args.seconds = 3.0
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    if args.load == "auto":
        args.load = "wrk" if shutil.which("wrk") else "httpx"
    setups = {"sqlite": [("sqlite", 1)], "postgres": [("postgres", 2)],
              "both": [("sqlite", 1), ("postgres", 2)]}[args.db]
    print(f"load: {args.load}; windows of {args.seconds:g} s, {args.rounds} rounds, connections "
          f"{','.join(map(str, args.connections))}; load average {os.getloadavg()[0]:.2f}", flush=True)
    maker = FormMaker()
    windows = [w for kind, processes in setups for w in run_setup(kind, processes, args, maker)]
    print()
    print(format_table(table_rows(summaries_of(windows))))
    for (setup, connections), group in itertools.groupby(
            (w for w in windows if w.server == "textback" and w.turns), key=lambda w: (w.setup, w.connections)):
        ws = list(group)
        held, stored = sum(w.turn_held_seconds or 0.0 for w in ws), sum(w.stored for w in ws)
        print(f"{setup} conns {connections}: textback's SQLite write turn held {held * 1000 / stored:.2f} ms per "
              f"missed call ({sum(w.turns or 0 for w in ws) / stored:.1f} turns): one process handles at most "
              f"{stored / held:.0f} calls/s, whatever the CPU")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; ratios are textback / bare")
    if args.json:
        args.json.write_text(json.dumps([asdict(w) for w in windows], indent=2))
    failed = [w for w in windows if w.load.errors or w.load.exhausted or w.stored < w.load.ok
              or (w.server == "textback" and w.sends < w.stored)]
    for w in failed:
        print(f"WARNING {w.setup} {w.server} conns {w.connections} round {w.round}: {w.load.errors} errors, "
              f"{w.stored} stored of {w.load.ok} answered 200, {w.sends} sent"
              f"{', forms ran out' if w.load.exhausted else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
