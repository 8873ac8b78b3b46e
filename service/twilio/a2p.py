"""A2P 10DLC: whether a number's texts to US phones can be delivered, read from the account (Messaging Services,
their senders and their US A2P campaigns, through the real SDK).

US carriers block application-to-person texts from a US 10-digit long code (10DLC) that is not in a Messaging
Service with a verified A2P campaign: Twilio fails each one with error 30034. Toll-free numbers need toll-free
verification instead (30032 when missing), and numbers outside the US are not 10DLC at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from twilio.rest import Client

from service.twilio.numbers import page_errors


class NumberKind(StrEnum):
    US_LONG_CODE = "US 10-digit long code"
    TOLL_FREE = "toll-free"
    OTHER = "not a US number"


def number_kind(phone: str) -> NumberKind:
    """How A2P rules see `phone` (E.164)."""
    parsed = phonenumbers.parse(phone, None)
    if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.TOLL_FREE:
        return NumberKind.TOLL_FREE
    if phonenumbers.region_code_for_number(parsed) == "US":
        return NumberKind.US_LONG_CODE
    return NumberKind.OTHER


@dataclass(frozen=True)
class MessagingService:
    """A Messaging Service holding a number, and where it sends the texts the number receives."""

    sid: str
    name: str
    inbound_request_url: str
    use_inbound_webhook_on_number: bool

    def inbound_url(self, number_sms_url: str) -> str:
        """The URL Twilio posts a text received by the number to: the service's own unless it defers to the
        number's webhook."""
        return number_sms_url if self.use_inbound_webhook_on_number else self.inbound_request_url


@dataclass(frozen=True)
class Campaign:
    """A US A2P campaign (UsAppToPerson) of a Messaging Service."""

    sid: str
    status: str  # campaign_status: VERIFIED, IN_PROGRESS, PENDING, FAILED, ...
    use_case: str

    @property
    def verified(self) -> bool:
        return self.status.upper() == "VERIFIED"

    @property
    def under_review(self) -> bool:
        return self.status.upper() in {"IN_PROGRESS", "PENDING"}


class MessagingIndex:
    """The account's Messaging Services by sender number, listed once and kept for every number checked."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._by_number: dict[str, list[MessagingService]] | None = None

    def services_of(self, phone: str) -> list[MessagingService]:
        with page_errors():
            return self._services_of(phone)

    def _services_of(self, phone: str) -> list[MessagingService]:
        if self._by_number is None:
            by_number: dict[str, list[MessagingService]] = {}
            for service in self._client.messaging.v1.services.list():
                info = MessagingService(
                    sid=str(service.sid), name=str(service.friendly_name or service.sid),
                    inbound_request_url=str(service.inbound_request_url or ""),
                    use_inbound_webhook_on_number=bool(service.use_inbound_webhook_on_number),
                )
                for sender in self._client.messaging.v1.services(info.sid).phone_numbers.list():
                    by_number.setdefault(str(sender.phone_number), []).append(info)
            self._by_number = by_number  # only once every page answered
        return self._by_number.get(phone, [])

    def campaigns(self, service_sid: str) -> list[Campaign]:
        with page_errors():
            return self._campaigns(service_sid)

    def _campaigns(self, service_sid: str) -> list[Campaign]:
        return [
            Campaign(sid=str(c.sid), status=str(c.campaign_status or "unknown"),
                     use_case=str(c.us_app_to_person_usecase or "unknown"))
            for c in self._client.messaging.v1.services(service_sid).us_app_to_person.list()
        ]
