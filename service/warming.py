"""The port of `textback serve` (one process) answers while the process warms up: the context is built and the
output guard loaded and self-checked (importing guardrails alone takes seconds) after the port is bound.

Meanwhile a small thread answers on the bound socket at once, every request 503 with `Retry-After: 1`:
`/health` says `starting` (a load balancer pointed at /health, as the README says, keeps traffic away until
the app serves: /health's 200 means "this process answers webhooks"), `/ready` says the warm-up is running, and
a webhook goes to Twilio's fallback URL, as it did when the port refused connections during start-up. Once warm, the thread stops accepting and the very
same socket goes to uvicorn; connections waiting in the listen backlog are served by the app. If warming up
fails, the socket is closed and start-up fails as before (one or two lines, exit 1).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

STARTING = b'{"status":"starting"}'
WARMING = b'{"status":"not ready","checks":{"warm_up":"running"}}'


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port, bound as uvicorn binds (SO_REUSEADDR)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _answer(status: str, body: bytes, *, head: bool = False, retry: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}",
             "connection: close"]
    if retry:
        lines.append("retry-after: 1")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def answer_for(request_line: bytes) -> bytes:
    """What a probe gets while warming up, from its request line."""
    parts = request_line.split()
    method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
    if path == b"/health":
        return _answer("503 Service Unavailable", STARTING, head=method == b"HEAD", retry=True)
    return _answer("503 Service Unavailable", WARMING, retry=True)


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(2.0)  # a probe sends its request at once; a slow client is dropped
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in data and len(data) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(answer_for(data.split(b"\r\n", 1)[0]))


@contextlib.contextmanager
def answering(sock: socket.socket) -> Iterator[None]:
    """Answer probes on `sock` (see the module docstring) for as long as the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            _serve_one(conn)

    sock.settimeout(0.2)
    thread = threading.Thread(target=loop, name="textback-warming", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.settimeout(None)
