"""The console's browser tests' machinery: the real app under uvicorn on a free loopback port, Debian's
Chromium driven by Playwright (never a downloaded browser), and page-level checks every page must pass.

Chromium missing fails the browser tests; only TEXTBACK_SKIP_BROWSER_TESTS=1, set on purpose on a machine
without it, skips them (CI never sets it: .ci/run installs Chromium first).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

CHROMIUM = Path("/usr/bin/chromium")
SKIP_ENV = "TEXTBACK_SKIP_BROWSER_TESTS"
PHONE_VIEWPORT = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def require_chromium() -> None:
    """Fail (or, with TEXTBACK_SKIP_BROWSER_TESTS=1, skip) when Debian's Chromium is not installed."""
    if CHROMIUM.exists():
        return
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{CHROMIUM} missing and {SKIP_ENV}=1")
    pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set {SKIP_ENV}=1 to skip locally)")


def free_socket() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 with a port the kernel chose (handed to uvicorn, so no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: Any, sock: socket.socket) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread on `sock`; yields its base URL, stops it after."""
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            msg = "the live server did not start"
            raise RuntimeError(msg)
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass
class PageWatch:
    """What a page said that a user would never see: uncaught script errors and console errors."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)


UNLABELLED_CONTROLS = """
() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(el => el.type !== 'hidden')
  .filter(el => {
    const named = el.labels && el.labels.length > 0 && Array.from(el.labels).some(l => l.textContent.trim());
    const aria = (el.getAttribute('aria-label') || '').trim() || el.getAttribute('aria-labelledby');
    const text = el.tagName === 'BUTTON' && el.textContent.trim();
    return !(named || aria || text);
  })
  .map(el => el.outerHTML.slice(0, 120))
"""

LANDMARKS = """
() => ({
  main: document.querySelectorAll('main').length,
  h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
  lang: document.documentElement.lang,
  title: document.title,
})
"""


# WCAG 2.x contrast of every visible piece of text against the first opaque background behind it: at least
# 4.5:1 (3:1 for large text: 24px, or 18.66px bold). Disabled controls are exempt, as WCAG exempts them.
LOW_CONTRAST = """
() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest('[hidden], .visually-hidden, template') || el.closest(':disabled')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none' || !el.getClientRects().length) continue;
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) low.push(`${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)}`);
  }
  return low;
}
"""


def check_page(page: Any) -> None:
    """What every console page must have: a language, a title, one main landmark, one h1, a label (or visible
    text) for every form control, and text that contrasts with what is behind it."""
    shape = page.evaluate(LANDMARKS)
    assert shape["lang"] == "en", shape
    assert shape["title"].strip(), shape
    assert shape["main"] == 1, shape
    assert len(shape["h1"]) == 1, shape
    assert shape["h1"][0], shape
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    assert (low := page.evaluate(LOW_CONTRAST)) == [], low
