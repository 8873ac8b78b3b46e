"""Scripted histories for the report tests: calls, replies, delivery reports and a person's actions, each at
its own wall-clock time, all through the real webhooks and the real API."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from service.models import Lead, OutboundMessage, Purpose
from tests.api_helpers import DIAL, signed_in
from tests.helpers import BROKER, BROKER_CELL, call_params, dial_params, sms_params, status_params

LA = ZoneInfo("America/Los_Angeles")
_sids = count(1)


class History:
    """One test's history: `at(...)` moves the clock to a wall time in Los Angeles (Dana's zone), then each
    step posts what Twilio or a person would."""

    def __init__(self, ctx, client, post, clock, broker: str = BROKER, zone: ZoneInfo = LA) -> None:
        self.ctx, self.client, self.post, self.clock = ctx, client, post, clock
        self.broker, self.zone = broker, zone
        self.user = signed_in(ctx, BROKER_CELL)

    def at(self, wall: str) -> History:
        self.clock.move_to(datetime.fromisoformat(wall).replace(tzinfo=self.zone))
        return self

    def _ok(self, path: str, params: dict[str, str]) -> None:
        response = self.post(self.client, path, params)
        assert response.status_code == 200, response.text

    def call(self, caller: str, *, answered: bool = False) -> None:
        """A call as Twilio reports it: the incoming call, then the <Dial> action (answered: bridged)."""
        sid = f"CA{next(_sids):032d}"
        self._ok("/twilio/voice", call_params(sid, caller=caller, to=self.broker))
        extra = {"DialCallStatus": "completed", "DialBridged": "true", "DialCallDuration": "120"} if answered \
            else {"DialCallStatus": "no-answer"}
        self._ok(DIAL, dial_params(extra.pop("DialCallStatus"), sid, caller=caller, to=self.broker, **extra))

    def reply(self, caller: str, text: str) -> None:
        self._ok("/twilio/sms", sms_params(text, sid=f"SM{next(_sids):032d}", sender=caller, to=self.broker))

    def delivery(self, caller: str, status: str, error_code: int | None = None) -> None:
        """Twilio's status callback for the caller's opener."""
        with Session(self.ctx.engine) as session:
            opener = session.exec(select(OutboundMessage).where(
                OutboundMessage.to_phone == caller, OutboundMessage.purpose == Purpose.opener,
            ).order_by(col(OutboundMessage.id).desc())).first()
        assert opener is not None, f"no opener to {caller}"
        assert opener.twilio_sid, f"the opener to {caller} was not sent"
        self._ok("/twilio/sms/status", status_params(opener.twilio_sid, status, to=caller, from_=self.broker,
                                                     error_code=error_code))

    def lead_id(self, caller: str) -> int:
        with Session(self.ctx.engine) as session:
            lead = session.exec(select(Lead).where(Lead.phone == caller)).one()
        assert lead.id is not None
        return lead.id

    def text(self, caller: str, body: str = "Hi, it's Dana. Is now a good time to talk about your loan?") -> None:
        """The broker texts the borrower from the console's API (a human contact)."""
        response = self.client.post(f"/api/leads/{self.lead_id(caller)}/messages", json={"body": body},
                                    headers=self.user)
        assert response.status_code == 201, response.text

    def outcome(self, caller: str, outcome: str) -> None:
        response = self.client.post(f"/api/leads/{self.lead_id(caller)}/outcome", json={"outcome": outcome},
                                    headers=self.user)
        assert response.status_code == 200, response.text

    def report(self, **params: str) -> dict:
        """GET /api/report as the broker, signed in now (a session started months earlier has expired)."""
        response = self.client.get("/api/report", params=params, headers=signed_in(self.ctx, BROKER_CELL))
        assert response.status_code == 200, response.text
        return response.json()
