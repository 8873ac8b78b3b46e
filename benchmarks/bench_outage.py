"""Benchmark the database-outage path: the voice webhook's answer while the database is down, and replay time.

Run: ``uv run python benchmarks/bench_outage.py [--calls N] [--hung]``. Everything is in-process on loopback:
the real app (create_app) on a fresh SQLite file in a temporary directory, dry-run (no Twilio: texts are stored
and printed to a discarded stdout), real request signatures through Litestar's TestClient.

- Baseline: POST /twilio/voice with the database up (one CallEvent insert, the Dial TwiML).
- Down: the same webhook while the engine points at a PostgreSQL port that refuses connections (127.0.0.1:1),
  so each request fails, is spooled (fsync) and answered from memory.
- Hung (--hung, a few samples: each costs the 5 s connect timeout): a loopback listener that accepts and never
  answers, like a database host that went silent.
- Replay: N spooled missed calls (dial-status no-answer, distinct callers) replayed by the worker, against the
  baseline of the same N webhooks processed directly with the database up.
Figures are printed as medians and as ratios to the baseline measured in the same run. The circuit breaker
and broker caps are raised (a copy of policies/, as benchmarks/load_test.py does) so every missed call gets
its opener.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from litestar.testing import TestClient
from load_test import prepare_policies  # the breaker and caps raised, as for the load test

from service.app import create_app
from service.context import build_context
from service.replay import replay_spool
from service.settings import DEV_AUTH_TOKEN, Settings
from service.twilio import fake
from tests.outage import SilentListener, database_down, engine_at

PUBLIC = "https://textback.example.com"
BROKER = "+14155550100"


def params(n: int, **extra: str) -> dict[str, str]:
    caller = f"+1415555{n % 10000:04d}"
    return fake.call_form(f"CA{n:032x}", caller, BROKER, **extra)


def post(client: TestClient, path: str, form: dict[str, str]) -> float:
    headers = fake.signature_headers(token=DEV_AUTH_TOKEN, public_url=PUBLIC, path=path, form=form)
    start = time.perf_counter()
    response = client.post(path, data=form, headers=headers)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed



def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--hung", action="store_true", help="also time a silent database host (5 s a sample)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/textback.db", public_url=PUBLIC,
                            brokers_file=ROOT / "brokers.example.yaml",
                            policies_dir=prepare_policies(Path(tmp), shipped=False),
                            spool_dir=Path(tmp) / "spool", run_worker=False, twilio_account_sid=None,
                            twilio_auth_token=None, log_level="ERROR")
        ctx = build_context(settings)
        app = create_app(ctx=ctx, run_worker=False)
        worker = app.state.worker
        with TestClient(app=app, base_url="http://testserver.local") as client, \
                contextlib.redirect_stdout(io.StringIO()):
            n = args.calls
            up = [post(client, "/twilio/voice", params(i)) for i in range(n)]
            with database_down(ctx):
                down = [post(client, "/twilio/voice", params(n + i)) for i in range(n)]
            hung: list[float] = []
            if args.hung:
                with SilentListener() as host, engine_at(ctx, f"postgresql://postgres@127.0.0.1:{host.port}/db"):
                    hung = [post(client, "/twilio/voice", params(2 * n + i)) for i in range(3)]
            replay_spool(ctx)  # the voice webhooks spooled above, out of the way

            direct = [post(client, "/twilio/voice/dial-status", params(10 * n + i, DialCallStatus="no-answer"))
                      for i in range(n)]
            with database_down(ctx):
                for i in range(n):
                    post(client, "/twilio/voice/dial-status", params(20 * n + i, DialCallStatus="no-answer"))
            start = time.perf_counter()
            result = replay_spool(ctx)
            replay_seconds = time.perf_counter() - start
            assert result.replayed == n, result
            start = time.perf_counter()
            worker.after_webhook(result.send_ids, [])
            send_seconds = time.perf_counter() - start
        ctx.close()
    print(f"voice webhook, database up (baseline):       median {ms(up):7.2f} ms  ({n} calls)")
    print(f"voice webhook, database refusing (spooled):  median {ms(down):7.2f} ms  ratio {ms(down) / ms(up):.2f}")
    if hung:
        print(f"voice webhook, database host silent:         median {ms(hung):7.0f} ms  ratio {ms(hung) / ms(up):.0f}"
              f"  ({len(hung)} calls; the 5 s connect timeout)")
    per_direct = ms(direct)
    per_replay = replay_seconds / n * 1000
    print(f"missed call processed directly (baseline):   median {per_direct:7.2f} ms a webhook")
    print(f"missed calls replayed from the spool:        {per_replay:7.2f} ms a record ({n} in {replay_seconds:.2f} s)"
          f"  ratio {per_replay / per_direct:.2f}")
    per_both = (replay_seconds + send_seconds) / n * 1000
    print(f"  + their {len(result.send_ids)} openers sent (dry-run) in {send_seconds:.2f} s: "
          f"{per_both:.2f} ms a record, ratio {per_both / per_direct:.2f} (the direct webhook sends its opener too)")


if __name__ == "__main__":
    main()
