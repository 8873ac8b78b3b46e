"""A durable local spool for signed webhooks that could not be stored because the database was unreachable.

Each process appends to a file of its own, `spool-<pid>-<random>.jsonl` in the spool directory: one JSON
object per line (`path`, `form`, `received_at`, `request_id`), written with O_APPEND and fsync'd before the
webhook answers. The forms hold borrower text, so the directory is 0700, the files 0600, and a file is deleted
as soon as it has been replayed.

Any process may replay any file (`claim()`), so a worker on the same host replays what a web process spooled:

- A writer appends under a non-blocking `flock` and, once it holds the lock, checks that its path still names
  the file it has open; if a replayer renamed the file away, it opens a fresh one and writes there.
- A replayer takes the lock on a file without blocking (a file being written or replayed is skipped until the
  next sweep), renames a writer's file to `claimed-<random>.jsonl` and keeps the lock while it replays, then
  deletes it. If the database goes away again, or the replayer dies, the lock is released and the claimed file
  waits for the next sweep; replaying a record twice is harmless because every webhook is idempotent.
- A record that cannot be replayed (a bug, not an outage) goes to `dead-<pid>-<random>.jsonl`, which is never
  replayed and never deleted: it is for a person to look at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from service.logs import log

logger = logging.getLogger("textback.spool")

ACTIVE = "spool-"
CLAIMED = "claimed-"
DEAD = "dead-"
# How long an append waits for a replayer that holds the lock on the writer's file (it only holds it to
# rename the file, a few microseconds) before it gives up and the webhook answers 503.
APPEND_TIMEOUT_SECONDS = 2.0


class SpoolError(Exception):
    """The spool cannot be written (no space, no permission): the webhook must answer 503, as before."""


@dataclass(frozen=True)
class SpooledWebhook:
    """One webhook as Twilio sent it (already verified), and when it arrived."""

    path: str
    form: dict[str, str]
    received_at: datetime
    request_id: str | None = None
    origin: str = ""  # file and line, for the logs


@dataclass
class Claim:
    """A spool file this process holds (locked) while it replays it."""

    path: Path
    fd: int
    records: list[SpooledWebhook] = field(default_factory=list)
    unreadable: int = 0

    def done(self) -> None:
        """Every record was replayed: delete the file."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        _fsync_dir(self.path.parent)
        self.release()

    def release(self) -> None:
        """Give the file back for a later sweep (the database went away again)."""
        if self.fd >= 0:
            os.close(self.fd)  # also drops the lock
            self.fd = -1


def _fsync_dir(directory: Path) -> None:
    """Make a new or renamed file name durable too."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_ino, named.st_dev) == (held.st_ino, held.st_dev)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Spool:
    """The spool directory, as seen by one process (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None

    # -- writing ----------------------------------------------------------------------------------------

    def append(self, path: str, form: Mapping[str, str], *, request_id: str | None = None,
               received_at: datetime | None = None) -> None:
        """Append one webhook durably (fsync'd) or raise SpoolError."""
        record = {
            "v": 1, "path": path, "received_at": (received_at or datetime.now(UTC)).isoformat(),
            "request_id": request_id, "form": dict(form),
        }
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            with self._lock:
                self._append(data)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SpoolError(f"cannot write the spool in {self.directory}: {reason}") from None

    def _append(self, data: bytes) -> None:
        deadline = time.monotonic() + APPEND_TIMEOUT_SECONDS
        while True:
            fd, path = self._fd, self._path
            if fd is None or path is None:
                fd, path = self._open_active()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not _same_file(path, fd):
                    self._close_active()  # a replayer took this file: write to a new one
                    continue
                if time.monotonic() > deadline:
                    raise OSError(0, "spool file locked too long") from None
                time.sleep(0.001)
                continue
            try:
                if _same_file(path, fd):
                    _write_all(fd, data)
                    os.fsync(fd)
                    return
            except OSError:
                self._close_active()  # a partial line stays behind: start the next record in a new file
                raise
            finally:
                if self._fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._close_active()

    def _open_active(self) -> tuple[int, Path]:
        """Open a new active spool file (it becomes the one appended to); its descriptor and path."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{ACTIVE}{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._fd, self._path = fd, path
        _fsync_dir(self.directory)
        return fd, path

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._path = None, None

    def close(self) -> None:
        with self._lock:
            self._close_active()

    def dead_letter(self, record: SpooledWebhook, reason: str) -> None:
        """Keep a record that cannot be replayed for a person to look at (never replayed, never deleted)."""
        line = {"v": 1, "path": record.path, "received_at": record.received_at.isoformat(),
                "request_id": record.request_id, "form": record.form, "reason": reason}
        path = self.directory / f"{DEAD}{os.getpid()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- replaying --------------------------------------------------------------------------------------

    def has_files(self) -> bool:
        """Anything waiting to be replayed (cheap: one directory listing)."""
        try:
            return any(entry.name.startswith((ACTIVE, CLAIMED)) and entry.name.endswith(".jsonl")
                       for entry in os.scandir(self.directory))
        except FileNotFoundError:
            return False

    def claim(self) -> list[Claim]:
        """Take every spool file nobody is writing or replaying right now; the caller replays then calls
        done() (or release()) on each."""
        claims: list[Claim] = []
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory)
                           if entry.name.startswith((ACTIVE, CLAIMED)) and entry.name.endswith(".jsonl"))
        except FileNotFoundError:
            return []
        for name in names:
            claim = self._claim_one(self.directory / name)
            if claim is not None:
                claims.append(claim)
        return claims

    def _claim_one(self, path: Path) -> Claim | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _same_file(path, fd):
            os.close(fd)  # renamed or deleted by another replayer meanwhile
            return None
        if path.name.startswith(ACTIVE):
            target = path.with_name(f"{CLAIMED}{uuid.uuid4().hex}.jsonl")
            os.rename(path, target)
            _fsync_dir(self.directory)
            path = target
        claim = Claim(path=path, fd=fd)
        self._read(claim)
        return claim

    @staticmethod
    def _read(claim: Claim) -> None:
        chunks = []
        while chunk := os.read(claim.fd, 1 << 20):
            chunks.append(chunk)
        for number, line in enumerate(b"".join(chunks).split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                form = data["form"]
                if not isinstance(form, dict):
                    raise TypeError("form")
                received = datetime.fromisoformat(data["received_at"])
                claim.records.append(SpooledWebhook(
                    path=str(data["path"]), form={str(k): str(v) for k, v in form.items()},
                    received_at=received if received.tzinfo else received.replace(tzinfo=UTC),
                    request_id=data.get("request_id"), origin=f"{claim.path.name}:{number}",
                ))
            except (ValueError, KeyError, TypeError):
                # A process killed in the middle of a write leaves a partial last line: it never answered
                # Twilio, which retries the webhook, so nothing is lost by skipping it.
                claim.unreadable += 1
                log(logger, logging.WARNING, "unreadable spool line skipped", file=claim.path.name, line=number)
