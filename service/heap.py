"""Start-up's objects kept out of the garbage collector's full passes.

A warmed process holds about 250,000 objects for its whole life: the reply rules and their regexes, the output
guard with guardrails, pydantic's and SQLAlchemy's models. Each of CPython's full collections walks every one of
them, 0.15-0.3 s with the GIL held (no request is answered meanwhile), and a server that keeps allocating runs
one every few tens of thousands of surviving objects. `gc.freeze()` moves everything alive at that moment into
a permanent generation that collections skip; what requests allocate afterwards is collected as before.

Only a server or worker process freezes (`serve`, `worker`, `serve --workers`' processes): a test process that
froze every context it built would never free them.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

__all__ = ["freeze_started"]


def freeze_started(ctx: Any) -> None:
    """Freeze what warm-up built. When the output guard is still loading in the background (a restart that
    answered from its kept verdicts), freeze again once it has loaded: guardrails is most of the objects."""
    gc.freeze()
    if ctx.guard_state() == "loading":
        threading.Thread(target=_freeze_when_loaded, args=(ctx,), name="textback-heap", daemon=True).start()


def _freeze_when_loaded(ctx: Any) -> None:
    if ctx.wait_for_guard():  # bounded by the guard's own watchdog; a failed guard stops the process instead
        gc.freeze()
