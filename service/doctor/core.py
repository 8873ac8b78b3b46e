"""What every doctor check returns (Check) and shares (Doctor: the settings, and what is built or read once:
the brokers, the database engine, the Twilio client, each number's set-up)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine
from twilio.rest import Client

from service.brokers import BrokerConfig
from service.settings import Settings
from service.twilio.a2p import MessagingIndex
from service.twilio.client import HttpxTwilioClient
from service.twilio.numbers import NumberSetup, find_number, twilio_client

DRY_RUN_SKIP = "dry-run: no credentials"


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but not as a deployment should (exit status stays 0)
    FAILED = "failed"  # the deployment is broken here (exit status 1)
    SKIPPED = "skipped"  # not checked (dry-run, or what it needs failed above); never fails the run


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, its status, what was found, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warning(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARNING, detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAILED, detail, fix)


def skipped(name: str, detail: str) -> Check:
    return Check(name, Status.SKIPPED, detail)


class Doctor:
    """The state the checks share, each part built on first use and released by close()."""

    def __init__(self, settings: Settings, *, guard: Any = None) -> None:
        self.settings = settings
        self.guard = guard  # an OutputGuard to reuse for the policy check (None: built by it)
        self.brokers: list[BrokerConfig] | None = None  # set by the brokers check; None: unreadable
        self.engine: Engine | None = None  # set by the database check when the database answered
        self.account_ok = False  # set by the Twilio account check
        self._twilio: tuple[Client, HttpxTwilioClient] | None = None
        self._numbers: dict[str, NumberSetup | None] = {}
        self._messaging: MessagingIndex | None = None

    @property
    def twilio(self) -> Client:
        if self._twilio is None:
            self._twilio = twilio_client(self.settings)
        return self._twilio[0]

    @property
    def messaging(self) -> MessagingIndex:
        if self._messaging is None:
            self._messaging = MessagingIndex(self.twilio)
        return self._messaging

    def number(self, phone: str) -> NumberSetup | None:
        """The account's set-up of `phone` (fetched once), None when the account has no such number."""
        if phone not in self._numbers:
            self._numbers[phone] = find_number(self.twilio, phone)
        return self._numbers[phone]

    def close(self) -> None:
        if self._twilio is not None:
            self._twilio[1].close()
        if self.engine is not None:
            self.engine.dispose()
