"""A started process moves start-up's objects out of the garbage collector's full passes (service.heap).

Each case runs in a fresh process: freezing the test process would keep every context the suite builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import BROKERS_YAML, POLICIES, PUBLIC_URL

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import gc, json, sys, threading


def frozen(obj):
    # gc.get_objects() lists the three generations, not the permanent one gc.freeze() moves objects to
    return all(o is not obj for o in gc.get_objects())

from litestar.testing import TestClient
from service.app import create_app
from service.context import build_context
from service.heap import freeze_started
from service.policy.guard import OutputGuard
from service.settings import Settings

settings = Settings(_env_file=None)
out = {}
first = build_context(settings)
first.warm_up()  # a first start: the Guard loads before warm-up ends, the start-up verdicts are kept
marker = [first]
out["tracked_before"] = not frozen(marker)
freeze_started(first)
out["first_frozen"] = frozen(marker)
out["first_threads"] = sorted(t.name for t in threading.enumerate() if t.name == "textback-heap")
first.close()

# A restart: answered from the kept verdicts while the Guard's background build is held here.
release = threading.Event()
build = OutputGuard.from_rules.__func__
OutputGuard.from_rules = classmethod(lambda cls, *args: (release.wait(120), build(cls, *args))[1])
restart = build_context(settings)
restart.warm_up()
out["restart_state"] = restart.guard_state()
freeze_started(restart)
later = [restart]  # made after the first freeze, while the Guard still loads
out["later_tracked"] = not frozen(later)
release.set()
for thread in threading.enumerate():
    if thread.name == "textback-heap":
        thread.join(120)
out["guard_state"] = restart.guard_state()
out["refrozen_after_guard"] = frozen(later)
restart.close()

for freeze in (False, True):
    gc.unfreeze()
    app = create_app(settings, run_worker=False, freeze_heap=freeze)
    with TestClient(app) as client:
        client.get("/health")
        out[f"app_frozen_{freeze}"] = frozen(app)
print(json.dumps(out))
"""


def test_freeze_started_freezes_after_warm_up_and_again_when_guard_loads(tmp_path: Path) -> None:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BROKERS_YAML)
    env = {
        **os.environ,
        "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'textback.db'}",
        "TEXTBACK_BROKERS_FILE": str(brokers),
        "TEXTBACK_POLICIES_DIR": str(POLICIES),
        "TEXTBACK_GUARD_CACHE_DIR": str(tmp_path / "guard-cache"),
        "TEXTBACK_SPOOL_DIR": str(tmp_path / "spool"),
        "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
        "TEXTBACK_OPENAI_API_KEY": "",
        "TEXTBACK_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tracked_before"] is True
    assert out["first_frozen"] is True
    assert out["first_threads"] == []  # the Guard had loaded: nothing left to wait for
    assert out["restart_state"] == "loading"
    assert out["later_tracked"] is True
    assert out["guard_state"] == "ok"
    assert out["refrozen_after_guard"] is True  # what the Guard's background build made is frozen too
    assert out["app_frozen_True"] is True  # serve --workers' processes (service.asgi)
    assert out["app_frozen_False"] is False  # the default, which every test's app uses
