"""Shared fixtures. The network guard below makes any attempt to leave the machine a test failure."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo

OUTBOUND_ATTEMPTS: list[str] = []


def _is_local(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text in {"localhost", "", "testserver", "testserver.local"}:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def _address_host(address: object) -> object:
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # AF_UNIX paths are local


def _guarded_connect(self: socket.socket, address: object) -> None:
    host = _address_host(address)
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"connect {address!r}")
        raise OSError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    host = _address_host(address)
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"connect_ex {address!r}")
        raise OSError(f"tests must not reach the network (tried {address!r})")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object):  # noqa: ANN202
    if not _is_local(host):
        OUTBOUND_ATTEMPTS.append(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"tests must not resolve remote hosts (tried {host!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    """Refuse every non-loopback connection and DNS lookup for the whole run."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture
def outbound_attempts():  # noqa: ANN201
    """A callable returning the network attempts made so far in this test (each one was refused)."""
    start = len(OUTBOUND_ATTEMPTS)
    return lambda: OUTBOUND_ATTEMPTS[start:]
