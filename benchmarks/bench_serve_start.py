"""How soon `textback serve` answers after it is started, against the bare app (`bare_app.py`) started the same way.

    uv run python benchmarks/bench_serve_start.py [--rounds 3]

Each round starts, in turn, the bare app (one process, its own SQLite file) and `textback serve` twice in one
fresh folder (one process, live mode against an address where nothing listens, a migrated SQLite file, the
load test's brokers and policies), and polls `GET /health` (the bare app: any answer) every 20 ms from the
moment the process is spawned:

- first answer: the port answers at all (textback: 503 `starting` while it warms up, service/warming.py);
- /health 200: textback serves webhooks (the context built, the output guard's start-up check done).

The first start finds an empty guard cache (TEXTBACK_GUARD_CACHE_DIR, var/guard-cache in the folder): it runs
every policy example through the Guard and records the pass and the start-up verdicts. The restart finds them,
as a restart or a second process of the same version does: it answers start-up's checks from the kept verdicts
and loads guardrails in the background while it serves (service.policy.verdict_file).

Medians over the rounds, and textback's figures as multiples of the bare app's first answer.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import compare_bare as cb  # after the path is set
import load_test as lt


def poll(url: str, proc: subprocess.Popen[bytes], started: float, timeout: float, *,
         any_answer: bool = False) -> tuple[float, float]:
    """Seconds from `started` to the first answer on /health and to the first 200 (`any_answer`: any status)."""
    first = None
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} while starting")
        try:
            status = httpx.get(url + "/health", timeout=1).status_code
        except httpx.HTTPError:
            status = None
        now = time.monotonic() - started
        if status is not None and first is None:
            first = now
        if status == 200 or (status is not None and any_answer):
            return first if first is not None else now, now
        time.sleep(0.02)
    raise SystemExit(f"no /health 200 within {timeout:.0f} s")


def bare_round(workdir: Path) -> float:
    started = time.monotonic()
    proc, url = cb.spawn_bare(f"sqlite:///{workdir / 'bare.db'}", workdir, 1)
    try:
        first, _ = poll(url, proc, started, 120, any_answer=True)
    finally:
        lt.stop(proc)
    return first


def textback_round(workdir: Path, *, restart: bool = False) -> tuple[float, float]:
    """One start of `textback serve` in `workdir`; `restart`: the folder of a previous start (its database
    migrated, its guard cache written), as a restart or a second process on the same machine finds it."""
    if not restart:
        (workdir / "brokers.yaml").write_text(lt.BROKERS_YAML)
    policies = lt.prepare_policies(workdir, shipped=False) if not restart else workdir / "policies"
    env = cb.textback_env(f"sqlite:///{workdir / 'textback.db'}", workdir, policies, "http://127.0.0.1:9")
    if not restart:
        cb.upgrade(env, workdir)
    port = lt.free_port()
    started = time.monotonic()
    log = workdir / ("restart.log" if restart else "serve.log")
    proc = subprocess.Popen([*lt.textback_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=workdir, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return poll(f"http://127.0.0.1:{port}", proc, started, 180)
    finally:
        lt.stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bare: list[float] = []
    starts: dict[str, tuple[list[float], list[float]]] = {"first start": ([], []), "restart": ([], [])}
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="textback-start-") as folder:
            workdir = Path(folder)
            bare.append(bare_round(workdir))
            line = f"round {round_}: bare app answers at {bare[-1]:.2f} s"
            for kind, (first, ready) in starts.items():
                answered, serving = textback_round(workdir, restart=kind == "restart")
                first.append(answered)
                ready.append(serving)
                line += f"; textback {kind} answers at {answered:.2f} s, /health 200 at {serving:.2f} s"
        print(line, flush=True)
    base = statistics.median(bare)
    print(f"median of {args.rounds}: bare app {base:.2f} s")
    for kind, (first, ready) in starts.items():
        print(f"  textback {kind}: first answer {statistics.median(first):.2f} s "
              f"({statistics.median(first) / base:.1f}x), /health 200 {statistics.median(ready):.2f} s "
              f"({statistics.median(ready) / base:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
