"""A borrower's sensitive numbers (SSN, bank account, routing, card) are masked wherever borrower text leaves the
database: broker alerts and logs. Phone numbers, dates, amounts, ZIP codes and times stay readable.

The truth table was written before looking at any existing redaction code, from what borrowers actually type.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlmodel import Session, select

from service.models import InboundMessage, OutboundMessage
from service.redact import redact
from service.sensitive import mask_sensitive
from tests.helpers import BROKER_ALERT, CALLER, call_params, sent_texts, sms_params

# (text, the secret that must not survive)
MASKED = [
    # Social Security numbers, labelled or not, in every common format
    ("my ssn is 123-45-6789", "123-45-6789"),
    ("SSN: 123 45 6789", "123 45 6789"),
    ("social security number 123456789", "123456789"),
    ("my social is 078.05.1120", "078.05.1120"),
    ("ss# 219-09-9999 thanks", "219-09-9999"),
    ("SS#219099999", "219099999"),
    ("here you go 123-45-6789", "123-45-6789"),
    ("123 45 6789", "123 45 6789"),
    ("Soc sec no. 123-45-6789", "123-45-6789"),
    ("last 4 of my social is 6789", "6789"),
    ("social security # is 987-65-4321, dob 1/2/1980", "987-65-4321"),
    ("ssn 123 - 45 - 6789", "123 - 45 - 6789"),
    # Bank account numbers
    ("account number 12345678", "12345678"),
    ("acct # 000123456789", "000123456789"),
    ("my checking account is 9876543210", "9876543210"),
    ("acct: 4455667788 at chase", "4455667788"),
    ("savings acct no. 55012345", "55012345"),
    ("bank account ending in 4321", "4321"),
    ("Account#: 0012-3456-7890", "0012-3456-7890"),
    # Routing numbers
    ("routing 021000021", "021000021"),
    ("routing number: 121000358", "121000358"),
    ("ABA 011000015", "011000015"),
    ("routing # 026-009-593", "026-009-593"),
    ("routing and account: 021000021 / 000123456789", "000123456789"),
    # Card numbers (Luhn-valid), with or without labels and separators
    ("card 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("use 4111111111111111 for the fee", "4111111111111111"),
    ("amex 3782 822463 10005", "3782 822463 10005"),
    ("my visa is 5555555555554444", "5555555555554444"),
    ("credit card # 6011 1111 1111 1117 exp 04/27", "6011 1111 1111 1117"),
    ("debit card ends in 4242", "4242"),
    # A card's security code, and its expiry date next to a card
    ("cvv 123", "123"),
    ("CVC: 4567", "4567"),
    ("security code is 321", "321"),
    ("card 4111 1111 1111 1111 exp 12/28 cvv 123", "12/28"),
    ("visa 5555555555554444, expires 04/2027", "04/2027"),
    # Bare digit runs nothing readable looks like
    ("it's 021000021", "021000021"),
    ("here: 000123456789", "000123456789"),
    ("0012345678 is the one", "0012345678"),
]

# Text that must come back exactly as it went in.
UNMASKED = [
    # phone numbers
    "call me at (415) 555-0199",
    "415-555-0199 after 5",
    "+1 415 555 0199",
    "my cell 4155550199",
    "415.555.0199",
    "1-800-555-0100",
    "+442079460958",
    "14155550199",
    # dates
    "closing 03/15/2026",
    "closing is 2026-03-15",
    "on 3/15",
    "March 15, 2026",
    "by 12/31/25",
    "20260315",
    "dob 1/2/1980",
    # amounts
    "$450,000",
    "budget about 450000 dollars",
    "$1,250,000.00",
    "$125000000 portfolio",
    "$3,200/mo",
    "1.2 million",
    "put 20% down on 650k",
    # ZIP codes
    "94110",
    "zip 94110-1234",
    "Austin TX 78701",
    # times
    "6:30 pm",
    "call after 5",
    "6.30 tonight",
    "between 9 and 11am",
    # other numbers people mention
    "my credit score is 720",
    "123 Main St Apt 4B",
    "rate lock expires friday",
    "NMLS 123456",
    "MLS# 20231234",
    "my account balance is 5000",
    "I have 2 accounts",
    "call me after social hour at 5",
    "years 2020 2021 2022 2023",
    "1234 5678 9012 3456",
    "loan amount 350000",
    "my social security is 2400 a month",
    "social security income $2,400/mo",
    "card expires 2026",
    "my rate lock expires 12/15",
    "the offer expires 3/1, can you call?",
    "account opened 1/2/2020",
    "my account manager said 6 pm",
    "",
]


@pytest.mark.parametrize(("text", "secret"), MASKED, ids=[t for t, _ in MASKED])
def test_mask_sensitive_number(text: str, secret: str) -> None:
    out = mask_sensitive(text)
    assert secret not in out
    digits = re.sub(r"\D", "", secret)
    assert digits not in re.sub(r"\D", "", out)
    assert "[" in out, "a placeholder says something was removed"


@pytest.mark.parametrize(("text", "secret"), MASKED, ids=[t for t, _ in MASKED])
def test_redact_sensitive_number_for_logs(text: str, secret: str) -> None:
    """Logs take `redact`, stricter still (every run of 4+ digits): no sensitive number survives it either."""
    digits = re.sub(r"\D", "", secret)
    assert digits not in re.sub(r"\D", "", redact(text, keep=500))


@pytest.mark.parametrize("text", UNMASKED, ids=[t or "empty" for t in UNMASKED])
def test_keep_readable_number(text: str) -> None:
    assert mask_sensitive(text) == text


DIAL = "/twilio/voice/dial-status"


def test_mask_sensitive_numbers_in_broker_alert_but_keep_full_text(client, post, twilio_api, ctx) -> None:
    assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200
    text = "call me asap, rate lock expires friday. ssn 123-45-6789 card 4111 1111 1111 1111"
    assert post(client, "/twilio/sms", sms_params(text)).status_code == 200
    alerts = [t["Body"] for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT]
    assert alerts, "the broker is alerted"
    for body in alerts:
        assert "6789" not in body
        assert "1111 1111" not in body
        assert CALLER in body, "the caller's number stays readable"
    with Session(ctx.engine) as session:
        stored = session.exec(select(InboundMessage)).one()
        queued = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == BROKER_ALERT)).all()
    assert stored.body == text, "the console keeps the full text"
    assert all("6789" not in m.body for m in queued)


def test_mask_sensitive_numbers_in_forwarded_reply(client, post, twilio_api, ctx) -> None:
    """A text on a lead with no opener is forwarded to the broker: masked too."""
    assert post(client, "/twilio/sms", sms_params("acct # 000123456789 routing 021000021, call 415-555-0123")).status_code == 200
    [alert] = [t["Body"] for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT]
    assert "000123456789" not in alert
    assert "021000021" not in alert
    assert "415-555-0123" in alert


def test_mask_sensitive_numbers_in_logs(client, post, twilio_api, ctx, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="textback")
    assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200
    post(client, "/twilio/sms", sms_params("please call, my ssn is 123-45-6789 and acct 000123456789"))
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "123-45-6789" not in logged
    assert "000123456789" not in logged
