"""The doctor's checks against the Twilio account, through the real SDK: the credentials (an account fetch), each
broker number on the account with its webhooks pointing at TEXTBACK_PUBLIC_URL, and A2P 10DLC registration."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from twilio.base.exceptions import TwilioRestException

from service.doctor.core import DRY_RUN_SKIP, Check, Doctor, failed, ok, skipped, warning
from service.twilio.a2p import Campaign, NumberKind, number_kind
from service.twilio.numbers import expected_fields

A2P_HELP = "see the README's 'A2P 10DLC' section"
CREDENTIALS_FIX = ("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to the account's own (Twilio console: Account "
                   "info); the auth token is the primary one, not an API key secret")


def _api_failure(name: str, what: str, exc: Exception, settings_url: str) -> Check:
    """One line for a Twilio API call that did not answer as documented (`what`: which call, or "")."""
    on = f" {what}" if what else ""
    if isinstance(exc, TwilioRestException):
        if exc.status == 401:
            return failed(name, f"Twilio refused the credentials (HTTP 401, error {exc.code}){on}", CREDENTIALS_FIX)
        return failed(name, f"Twilio answered HTTP {exc.status} (error {exc.code}){on}: {exc.msg}",
                      "see Twilio's error dictionary for the code; run `textback doctor` again")
    return failed(name, f"cannot reach the Twilio API at {settings_url}{on} ({type(exc).__name__})",
                  "check the network (and TEXTBACK_TWILIO_API_URL / TEXTBACK_TWILIO_MESSAGING_URL)")


def check_account(doc: Doctor) -> list[Check]:
    """The credentials work: GET /2010-04-01/Accounts/{sid}.json answers with an active account."""
    settings = doc.settings
    if settings.dry_run:
        return [skipped("twilio account", DRY_RUN_SKIP)]
    try:
        account = doc.twilio.api.v2010.accounts(settings.twilio_account_sid).fetch()
    except (TwilioRestException, httpx.TransportError) as exc:
        return [_api_failure("twilio account", "on the account fetch", exc, settings.twilio_api_url)]
    name = f"{account.sid} ({account.friendly_name})"
    if account.status != "active":
        return [failed("twilio account", f"{name} is {account.status}: it cannot send or receive",
                       "reactivate the account in the Twilio console (Billing), or use an active one")]
    doc.account_ok = True
    if str(account.type or "").lower() == "trial":
        return [warning("twilio account", f"{name}: active, but a trial account: it texts only verified numbers, "
                        "each text prefixed 'Sent from your Twilio trial account'", "upgrade the account")]
    return [ok("twilio account", f"{name}: active")]


def _per_number(doc: Doctor, name: str, check: Callable[[Doctor, str], list[Check]]) -> list[Check]:
    """Run `check` for every broker's Twilio number, once the account and the brokers are known good."""
    if doc.settings.dry_run:
        return [skipped(name, DRY_RUN_SKIP)]
    if not doc.account_ok:
        return [skipped(name, "the Twilio account check failed")]
    if doc.brokers is None:
        return [skipped(name, "the brokers file is invalid")]
    lines: list[Check] = []
    for phone in dict.fromkeys(b.twilio_number for b in doc.brokers):
        try:
            lines += check(doc, phone)
        except (TwilioRestException, httpx.TransportError) as exc:
            lines.append(_api_failure(f"{name} {phone}", "", exc, doc.settings.twilio_api_url))
    return lines


def check_numbers(doc: Doctor) -> list[Check]:
    """Each broker's number is on the account with voice, status, messaging and fallback URLs (POST) at
    TEXTBACK_PUBLIC_URL, and no TwiML App overriding them."""
    return _per_number(doc, "twilio number", _check_number)


def _check_number(doc: Doctor, phone: str) -> list[Check]:
    name = f"twilio number {phone}"
    setup = doc.number(phone)
    if setup is None:
        return [failed(name, f"not a number of account {doc.settings.twilio_account_sid}",
                       f"buy or port {phone} into this account, or correct its twilio_number in "
                       f"{doc.settings.resolved_brokers_file()}")]
    changes = setup.changes(doc.settings.public_url)
    if not changes:
        return [ok(name, f"voice, status, messaging and fallback URLs point to {doc.settings.public_url}")]
    found = "; ".join(f"{c.field} is {c.current or '(none)'}, expected {c.expected or '(none)'}" for c in changes)
    return [failed(name, found, f"textback twilio configure --number {phone}")]


def check_a2p(doc: Doctor) -> list[Check]:
    """Each US 10-digit number is in a Messaging Service with a verified US A2P campaign, and that service
    hands incoming texts to textback."""
    return _per_number(doc, "A2P 10DLC", _check_a2p)


def _check_a2p(doc: Doctor, phone: str) -> list[Check]:
    name = f"A2P 10DLC {phone}"
    kind = number_kind(phone)
    if kind is NumberKind.TOLL_FREE:
        return [skipped(name, "not applicable: a toll-free number needs toll-free verification instead (Twilio "
                        "console: Messaging > Regulatory compliance; unverified, texts fail with error 30032)")]
    if kind is NumberKind.OTHER:
        return [skipped(name, "not applicable: not a US number (A2P 10DLC is US long codes only)")]
    setup = doc.number(phone)
    if setup is None:
        return [skipped(name, "the number is not on the account")]
    blocked = "US carriers block its texts (Twilio error 30034: unregistered A2P 10DLC number)"
    services = doc.messaging.services_of(phone)
    if not services:
        return [failed(name, f"in no Messaging Service, so in no A2P campaign: {blocked}",
                       f"register a brand and campaign, add {phone} to the campaign's Messaging Service; {A2P_HELP}")]
    service = services[0]  # Twilio allows a number in one Messaging Service only
    where = f"Messaging Service {service.name} ({service.sid})"
    lines = [_a2p_campaign(name, where, doc.messaging.campaigns(service.sid), blocked)]
    expected_sms = expected_fields(doc.settings.public_url)["sms_url"]
    inbound = service.inbound_url(setup.values.get("sms_url", ""))
    if inbound != expected_sms:
        lines.append(failed(
            f"incoming texts {phone}", f"{where} sends the texts {phone} receives to {inbound or '(nowhere)'}, "
            f"not {expected_sms}: replies and STOP never reach textback",
            "in the service's Integration settings choose 'Defer to sender's webhook' (then run "
            f"`textback twilio configure --number {phone}`), or set its request URL to {expected_sms}"))
    return lines


def _a2p_campaign(name: str, where: str, campaigns: list[Campaign], blocked: str) -> Check:
    verified = [c for c in campaigns if c.verified]
    if verified:
        c = verified[0]
        return ok(name, f"{where}, campaign {c.sid} ({c.use_case}): VERIFIED")
    if not campaigns:
        return failed(name, f"{where} has no US A2P campaign: {blocked}",
                      f"register a campaign for the service (brand first); {A2P_HELP}")
    c = campaigns[0]
    if c.under_review:
        return warning(name, f"{where}, campaign {c.sid} ({c.use_case}) is {c.status}: until it is VERIFIED "
                       f"{blocked}", "wait for the review (it can take days to weeks); the console shows progress")
    return failed(name, f"{where}, campaign {c.sid} ({c.use_case}) is {c.status}: {blocked}",
                  f"read the campaign's errors in the console, correct and resubmit it; {A2P_HELP}")
