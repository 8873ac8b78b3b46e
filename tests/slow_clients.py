"""Slow and idle clients against a real `textback serve` subprocess: the attack, and what it measures.

Used by tests/test_slow_clients.py, and runnable by hand to print the numbers (`python -m tests.slow_clients`):
slow clients send one header byte a second and never finish; idle clients connect and send nothing; meanwhile
signed missed-call webhooks (`/twilio/voice/dial-status`) must keep answering 200 TwiML.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.settings import DEV_AUTH_TOKEN
from service.twilio import fake

REPO = Path(__file__).resolve().parent.parent
BROKER = "+14155550100"  # the first broker of brokers.example.yaml
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """`textback serve` (dry-run, SQLite in `workdir`) in a subprocess, its stderr in a file."""

    workdir: Path
    env: dict[str, str]
    nofile: int | None = None  # RLIMIT_NOFILE (soft and hard) for the child, as a small server would have
    args: tuple[str, ...] = ()  # more `textback serve` options (--workers N)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "serve.log"

    def _limit(self) -> None:
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> Service:
        script = Path(sys.executable).with_name("textback")
        command = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
        env.update({
            "TEXTBACK_DATABASE_URL": f"sqlite:///{self.workdir / 'textback.db'}",
            "TEXTBACK_BROKERS_FILE": str(REPO / "brokers.example.yaml"),
            "TEXTBACK_POLICIES_DIR": str(REPO / "policies"),
            "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"),
            "TEXTBACK_PUBLIC_URL": self.url,
            **self.env,
        })
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # our own console script
                [*command, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._limit,  # noqa: PLW1509 - only setrlimit, before exec
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"textback serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"textback serve did not start in {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def open_fds(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running(env: dict[str, str], nofile: int | None = None, args: tuple[str, ...] = ()) -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="textback-conns-") as tmp:
        service = Service(Path(tmp), env, nofile, args).start()
        try:
            yield service
        finally:
            service.stop()


async def _webhook(client: httpx.AsyncClient, service: Service, n: int) -> tuple[int, float, str]:
    """One signed missed call (the dial action with no-answer), on a fresh connection: status, seconds, body."""
    caller = f"+1415555{n:04d}"
    form = fake.dial_status_form(fake.random_sid("CA"), caller, BROKER, "no-answer")
    path = "/twilio/voice/dial-status"
    headers = fake.signature_headers(token=DEV_AUTH_TOKEN, public_url=service.url, path=path, form=form)
    started = time.monotonic()
    try:
        response = await client.post(service.url + path, data=form, headers=headers)
    except httpx.HTTPError as exc:
        return 0, time.monotonic() - started, type(exc).__name__
    return response.status_code, time.monotonic() - started, response.text


async def _slow(port: int, opened: list[float], closed: list[float], dripping: float) -> None:
    """A client that sends its request line one byte a second and never finishes; records when it was closed."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(0.0)
        return
    start = time.monotonic()
    opened.append(start)
    request = b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    try:
        for byte in request[: int(dripping)]:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                    break  # the server closed it
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        pass
    closed.append(time.monotonic() - start)
    writer.close()


async def _idle(port: int, opened: list[float], closed: list[float], hold: float) -> None:
    """A client that connects and sends nothing; records when (seconds after connecting) the server closed it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(0.0)
        return
    start = time.monotonic()
    opened.append(start)
    try:
        await asyncio.wait_for(reader.read(1024), hold)
    except (TimeoutError, ConnectionError, OSError):
        pass
    closed.append(time.monotonic() - start)
    writer.close()


async def attack(service: Service, *, slow: int, idle: int, seconds: float,
                 header_timeout: float = 10.0) -> dict[str, object]:
    """Open `slow` slow and `idle` idle connections for up to `seconds`, webhooks twice a second meanwhile."""
    log_before = service.log_bytes()
    slow_opened: list[float] = []
    slow_closed: list[float] = []
    idle_opened: list[float] = []
    idle_closed: list[float] = []
    clients = [_slow(service.port, slow_opened, slow_closed, seconds) for _ in range(slow)]
    clients += [_idle(service.port, idle_opened, idle_closed, seconds) for _ in range(idle)]
    tasks = [asyncio.ensure_future(client) for client in clients]
    hooks: list[tuple[int, float, str]] = []
    fds: list[int] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            fds.append(service.open_fds())
            hooks.append(await _webhook(client, service, n))
            n += 1
            await asyncio.sleep(0.5)
    await asyncio.gather(*tasks)
    latencies = sorted(seconds for status, seconds, _ in hooks if status == 200)
    return {
        "slow_opened": len(slow_opened),
        "slow_closed_after_max_s": round(max(slow_closed, default=0.0), 1),
        "slow_closed_after_median_s": round(sorted(slow_closed)[len(slow_closed) // 2], 1) if slow_closed else 0,
        "idle_opened": len(idle_opened),
        "idle_closed_after_max_s": round(max(idle_closed, default=0.0), 1),
        # Idle clients the server never closed: their connection never left the kernel's full accept queue (the
        # handshake completed on the client's side only), so nothing of the server's was held for them.
        "idle_never_closed": sum(1 for held in idle_closed if held >= seconds - 0.1),
        "idle_closed_within_header_timeout_plus_3s": sum(1 for held in idle_closed if held < header_timeout + 3),
        "max_open_fds": max(fds, default=0),
        "log_bytes": service.log_bytes() - log_before,
        "webhooks": len(hooks),
        "webhooks_ok": sum(1 for status, _, body in hooks if status == 200 and "<Response" in body),
        "webhook_failures": sorted({body[:60] for status, _, body in hooks if status != 200}),
        "webhook_max_s": round(max(latencies, default=0.0), 2),
        "webhook_median_s": round(latencies[len(latencies) // 2], 2) if latencies else 0,
    }


def main() -> None:
    """Print the numbers for one attack (`python -m tests.slow_clients SLOW IDLE SECONDS [NOFILE]`)."""
    slow, idle, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    nofile = int(sys.argv[4]) if len(sys.argv) > 4 else None
    env = {"TEXTBACK_RUN_WORKER": "false"}
    with running(env, nofile) as service:
        print(json.dumps({"idle_fds": service.open_fds()}))
        print(json.dumps(asyncio.run(attack(service, slow=slow, idle=idle, seconds=seconds))))
        print(service.log_tail(5))


if __name__ == "__main__":
    main()
