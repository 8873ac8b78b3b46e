"""Who may use the console and the API, and which brokers each of them sees.

Users are the phones of the brokers file: each broker's `forward_to`, `alert_to` and `backup_alert_to` (members of that broker)
and its `team:` list (role `member`: that broker; role `admin`: every broker of the file). A phone that is a
user of several brokers sees all of them. Computed from the brokers as loaded, so an edit to the file and a
restart change who sees what, with no stored copy to drift. A bearer token (a CRM) sees its one broker.

Every credential (a session, a bearer token, an alert link) is a random token stored only as its SHA-256
(`digest`), so a copy of the database signs no one in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.models import Broker


def digest(token: str) -> str:
    """What a credential is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = "") -> str:
    """A new random credential (256 bits), shown once."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    """A person who may sign in: their phone, a display name and the brokers they see."""

    phone: str
    name: str
    admin: bool
    broker_ids: frozenset[int]
    home_broker_id: int  # the broker whose number texts them their sign-in code

    @property
    def role(self) -> str:
        return "admin" if self.admin else "member"


@dataclass
class _Draft:
    name: str
    admin: bool = False
    broker_ids: set[int] = field(default_factory=set)
    home: int | None = None


def users_from_brokers(brokers: Iterable[Broker]) -> dict[str, User]:
    """Every user of the active brokers, by phone."""
    active = [b for b in brokers if b.active and b.id is not None]
    drafts: dict[str, _Draft] = {}

    def add(phone: str, name: str, broker_id: int, *, admin: bool = False) -> None:
        draft = drafts.setdefault(phone, _Draft(name=name))  # the first name wins: team entries come first
        draft.broker_ids.add(broker_id)
        draft.admin = draft.admin or admin
        if draft.home is None:
            draft.home = broker_id

    for broker in active:
        if broker.id is None:
            continue
        for member in broker.team or []:
            add(str(member["phone"]), str(member["name"]), broker.id, admin=member.get("role") == "admin")
        add(broker.forward_to, broker.name, broker.id)
        for phone in broker.alert_to or []:
            add(phone, broker.name if phone == broker.forward_to else f"{broker.name}'s team", broker.id)
        for phone in broker.backup_alert_to or []:
            # Told of an unworked handoff (service.handoff_sla), with the lead's link: they must be able to open it.
            add(phone, f"{broker.name}'s backup", broker.id)
    every = frozenset(b.id for b in active if b.id is not None)
    return {
        phone: User(phone=phone, name=d.name, admin=d.admin, broker_ids=every if d.admin else frozenset(d.broker_ids),
                    home_broker_id=d.home or 0)
        for phone, d in drafts.items()
    }


@dataclass(frozen=True)
class Principal:
    """Whoever is making an API or console request: a signed-in user, or a CRM's bearer token."""

    kind: str  # session | token
    name: str
    broker_ids: frozenset[int]
    phone: str | None = None  # the user's phone (None for a token)
    lead_id: int | None = None  # a session opened from an alert link sees this lead only
    session_id: int | None = None
    token_id: int | None = None
    csrf_token: str | None = None
    admin: bool = False

    @property
    def actor(self) -> str:
        """What the audit trail records as the author of this principal's actions."""
        return self.phone or f"token:{self.token_id}"

    def may_see(self, broker_id: int, lead_id: int | None = None) -> bool:
        if broker_id not in self.broker_ids:
            return False
        return self.lead_id is None or lead_id == self.lead_id
