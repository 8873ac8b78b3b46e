"""A small bounded pool of threads for the replies that need the LLM, so that a slow or rate-limited model never
holds up a webhook, a send or the sweep.

The pool never queues: a reply takes a slot (`reserve`) before it is claimed, or it is not claimed at all and
waits in the database, as received, for a later sweep. So a reply is never held in memory where a crash would
lose it, and a claimed reply starts at once (its claim never ages while it waits for a thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.logs import log

logger = logging.getLogger("textback.llm_pool")


class LLMPool:
    """`size` slots, each one thread. `reserve` never waits; `run` starts a job on a reserved slot."""

    def __init__(self, size: int, *, on_free: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError("an LLM pool needs at least one slot")
        self.size = size
        self._on_free = on_free
        self._slots = threading.BoundedSemaphore(size)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="textback-llm")
        self._state = threading.Condition()
        self._busy = 0
        self._turned_away = False
        self._closed = False

    @property
    def busy(self) -> int:
        with self._state:
            return self._busy

    def reserve(self) -> bool:
        """Take a free slot without waiting; False when every slot is busy (or the pool is shut down)."""
        with self._state:
            if self._closed or not self._slots.acquire(blocking=False):
                if not self._turned_away and not self._closed:  # once per episode, not once per reply
                    log(logger, logging.WARNING, "llm pool full; replies wait in the database for the sweep",
                        size=self.size)
                self._turned_away = True
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        """Give back a slot reserved for a job that will not run."""
        self._free()

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on a slot taken with `reserve`; the slot is freed when the job ends, however it ends."""
        try:
            self._executor.submit(self._run, job)
        except RuntimeError:  # shut down since the slot was reserved
            self._free()
            raise

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # a job's failure never takes the pool down
            log(logger, logging.ERROR, "llm job failed", exc_type=type(exc).__name__)
        finally:
            self._free()

    def _free(self) -> None:
        with self._state:
            self._busy -= 1
            self._slots.release()
            turned_away, self._turned_away = self._turned_away, False
            self._state.notify_all()
        if turned_away and self._on_free is not None:
            self._on_free()  # a reply was left for the sweep while the pool was full: sweep now

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is running; False if some still are after `timeout` seconds."""
        with self._state:
            return self._state.wait_for(lambda: self._busy == 0, timeout)

    def shutdown(self, timeout: float) -> None:
        """Take no more jobs, give running ones up to `timeout` seconds, then let their threads go.

        A job still running keeps its claim; if the process exits, the sweep of another takes the reply back
        once the claim is stale, and the lost job's late answer is refused by the claim check."""
        with self._state:
            self._closed = True
        if not self.wait_idle(timeout):
            log(logger, logging.WARNING, "llm jobs still running at shutdown", running=self.busy)
        self._executor.shutdown(wait=False, cancel_futures=True)
