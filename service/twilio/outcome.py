"""What a webhook handler returns: the TwiML to answer with and the work to start once its transaction commits.

Handlers run inside one transaction (service.worker.run_after_commit); texts they queue and inbound messages
they store are only handed to the worker after the commit, by id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from service.logs import log
from service.twilio import twiml

# The logger name the webhook events have always been logged under (operators filter on it).
logger = logging.getLogger("textback.flow")


@dataclass
class Outcome:
    """The TwiML answer and the work to start after commit."""

    twiml: str
    send_ids: list[int] = field(default_factory=list)
    inbound_ids: list[int] = field(default_factory=list)


def refuse_replay(sid: str, answer: str | None = None) -> Outcome:
    """A webhook for a SID whose rows were forgotten or purged: a replay (Twilio never reuses a SID)."""
    log(logger, logging.WARNING, "replayed webhook refused: its SID was forgotten", sid=sid)
    return Outcome(twiml=answer if answer is not None else twiml.empty_messaging())
