"""Waking the workers of other processes on PostgreSQL: LISTEN/NOTIFY on one channel.

Every transaction that queues a text or stores a reply (an INSERT into the outbound or inbound table, however
it is issued: ORM or core) sends `NOTIFY textback_work` in that same transaction, just before it commits, so
the notification goes out exactly when the work becomes visible, and never for a transaction rolled back. Each
process whose sweep runs has a listener thread with its own connection; a notification from another process
sets the context's wake event, so that process's sweep starts at once instead of at its next poll.

Only work nobody in the committing process will do notifies: a process whose own sweep runs (`handled_here`)
hands its webhooks' work to its own lanes at once, and a lane that turns work away wakes that sweep, so its
commits stay silent (a notification per queued text would start every other process's whole sweep, racing
for rows already being sent, and add a round trip to every webhook). A CLI command, the console-only process
of a deployment whose sweep runs in `textback worker`, or a test's context without a worker do notify. A
context's own notifications (its engine's token) are ignored as well. The poll stays as the fallback: a
listener that loses its connection reconnects, and meanwhile the poll still finds everything.

SQLite is one machine's file: the process's own wake event (ctx.wake) is all there is.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from service.logs import log

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from service.context import AppContext

logger = logging.getLogger("textback.wakeup")

CHANNEL = "textback_work"
QUEUES_WORK = re.compile(r"\s*INSERT\s+INTO\s+\"?(outboundmessage|inboundmessage)\b", re.IGNORECASE)
_FLAG = "textback_queued_work"
_tokens: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_handled_here: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines whose process's own sweep runs


def handled_here(engine: Engine, running: bool) -> None:
    """Say whether `engine`'s process sweeps its own work (its worker's sweep started or stopped)."""
    if running:
        _handled_here.add(engine)
    else:
        _handled_here.discard(engine)


def token_for(engine: Engine) -> str:
    """The payload `engine`'s transactions notify with: its own listener ignores it (that context's webhooks
    hand their work to its own lanes)."""
    return _tokens.setdefault(engine, uuid.uuid4().hex)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def install_notify(engine: Engine) -> None:
    """Make every committing transaction on `engine` that inserted a text or a reply NOTIFY the channel."""
    if not is_postgres(engine):
        return
    token = token_for(engine)

    @event.listens_for(engine, "after_cursor_execute")
    def _mark(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.engine not in _handled_here and QUEUES_WORK.match(statement):
            conn.info[_FLAG] = True

    @event.listens_for(engine, "commit")
    def _notify(conn: Connection) -> None:  # runs just before the COMMIT, inside the transaction
        if conn.info.pop(_FLAG, False):
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, token))
            finally:
                cursor.close()

    @event.listens_for(engine, "rollback")
    def _forget(conn: Connection) -> None:
        conn.info.pop(_FLAG, None)


class Listener:
    """A thread holding one PostgreSQL connection that LISTENs on the channel and sets `wake` for every
    notification another process sends."""

    RECONNECT_SECONDS = 5.0

    def __init__(self, engine: Engine, wake: threading.Event) -> None:
        self.engine = engine
        self.wake = wake
        self.listening = threading.Event()  # set while the LISTEN is in force
        self.woken = 0  # notifications from other processes seen (tests, logs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="textback-listen", daemon=True)

    @classmethod
    def start_for(cls, ctx: AppContext) -> Listener | None:
        """A started listener for this context's database; None on SQLite or with TEXTBACK_LISTEN_NOTIFY off."""
        if not ctx.settings.listen_notify or not is_postgres(ctx.engine):
            return None
        listener = cls(ctx.engine, ctx.wake)
        listener._thread.start()
        return listener

    def _connect(self) -> Any:
        import psycopg  # lazy: the PostgreSQL driver, imported only by a process that listens on PostgreSQL

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        conn = psycopg.connect(*args, **kwargs, autocommit=True)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _run(self) -> None:
        own = token_for(self.engine)
        failed = False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    self.listening.set()
                    if failed:
                        log(logger, logging.INFO, "listening for new work again")
                        failed = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.payload != own:
                                self.woken += 1
                                self.wake.set()
            except Exception as exc:  # the database went away: the poll carries on; reconnect shortly
                self.listening.clear()
                if not failed:
                    log(logger, logging.WARNING, "listening for new work failed; polling until it is back",
                        exc_type=type(exc).__name__)
                failed = True
                self._stop.wait(self.RECONNECT_SECONDS)
        self.listening.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
