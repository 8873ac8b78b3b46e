"""One-time secrets inside texts: the sign-in code (service.signin) and the alert link (service.lead_links).

Only their hashes are kept in their own tables, so the text that carries one must not keep it either: once a
text to the team has settled (sent, printed in dry-run, failed for good), its stored body forgets the secret
(`scrub`), and an alert sent again gets a link of its own (service.lead_links.relink). While it waits to be
sent the body holds it, because that is what goes to Twilio. In dry-run the printed text keeps them readable
(`readable`): the code and the link are what a developer on a fresh machine needs to sign in.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from service.models import Purpose

BASE62 = string.digits + string.ascii_letters
LINK_TOKEN_CHARS = 22  # 22 base62 characters: 131 random bits
LINK_PATH = "/l/"
SCRUBBED_TOKEN = "[sent]"  # noqa: S105 - what a settled text's link shows instead of its token, not a secret
SCRUBBED_CODE = "******"
# A link as an alert carries it (the public URL, /l/, the token), or as a settled text keeps it.
LINK = re.compile(r"(?P<base>https?://[^\s\"'<>]+?/l/)"
                  rf"(?P<token>[0-9A-Za-z]{{{LINK_TOKEN_CHARS}}}(?![0-9A-Za-z])|{re.escape(SCRUBBED_TOKEN)})")
CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")
_MARK = "<link>"


def first_link(body: str) -> str | None:
    """The first link (live or scrubbed) in `body`, whole."""
    match = LINK.search(body)
    return match.group(0) if match else None


def scrub(body: str, purpose: str) -> str:
    """`body` with its one-time secrets hidden: every link's token, and the code of a sign-in text."""
    body = LINK.sub(lambda m: m.group("base") + SCRUBBED_TOKEN, body)
    return CODE.sub(SCRUBBED_CODE, body) if purpose == Purpose.sign_in else body


def replace_links(body: str, link: Callable[[], str]) -> str:
    """`body` with each link (live or scrubbed) replaced by a fresh one from `link()`."""
    return LINK.sub(lambda _m: link(), body)


def readable(body: str, purpose: str, shown: Callable[[str], str]) -> str:
    """What dry-run prints for a text to the team: `shown(body)` (redacted, shortened), with the sign-in code
    and the links left whole (a sign-in text is a fixed template around the code: printed as is)."""
    if purpose == Purpose.sign_in:
        return body
    links = [m.group(0) for m in LINK.finditer(body)]
    text = shown(LINK.sub(_MARK, body))
    for link in links:
        text = text.replace(_MARK, link, 1) if _MARK in text else f"{text} {link}"
    return text
