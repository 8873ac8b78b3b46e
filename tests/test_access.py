"""Who the console's users are, read from the brokers as loaded (service.access.users_from_brokers)."""

from __future__ import annotations

import pytest

from service.access import users_from_brokers
from service.models import Broker


def broker(id_: int, number: str, cell: str, **extra: object) -> Broker:
    return Broker(id=id_, twilio_number=number, name=f"Broker {id_}", brokerage="B", nmls_id="1", forward_to=cell,
                  timezone="America/New_York", **extra)


BROKERS = [
    broker(1, "+14155550100", "+14155550111", alert_to=["+14155550111", "+14155550112"],
           backup_alert_to=["+14155550113"],
           team=[{"name": "Ada", "phone": "+14155550120", "role": "admin"},
                 {"name": "Mo", "phone": "+14155550121", "role": "member"}]),
    broker(2, "+12125550100", "+12125550111", alert_to=["+12125550111"],
           team=[{"name": "Mo", "phone": "+14155550121", "role": "member"}]),
    broker(3, "+13125550100", "+13125550111", active=False, team=[{"name": "Zed", "phone": "+13125550120"}]),
]


@pytest.mark.parametrize(
    ("phone", "brokers", "role"),
    [
        ("+14155550111", {1}, "member"),  # forward_to
        ("+14155550112", {1}, "member"),  # alert_to
        ("+14155550113", {1}, "member"),  # backup_alert_to: alerted with a link to an unworked lead
        ("+14155550120", {1, 2}, "admin"),  # an admin sees every active broker of the file
        ("+14155550121", {1, 2}, "member"),  # in two teams
        ("+12125550111", {2}, "member"),
        ("+13125550120", None, None),  # only in an inactive broker's team: no user
        ("+14155550199", None, None),  # a borrower
    ],
)
def test_find_user_brokers_by_phone(phone: str, brokers: set[int] | None, role: str | None) -> None:
    user = users_from_brokers(BROKERS).get(phone)
    if brokers is None:
        assert user is None
        return
    assert user is not None
    assert set(user.broker_ids) == brokers
    assert user.role == role


def test_name_user_from_team_entry_before_broker_phone() -> None:
    users = users_from_brokers(BROKERS)
    assert users["+14155550120"].name == "Ada"
    assert users["+14155550111"].name == "Broker 1"
    assert users["+14155550113"].name == "Broker 1's backup"
