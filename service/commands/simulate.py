"""`textback simulate`: drive the service with correctly signed Twilio webhooks, no Twilio account needed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import click
import httpx

from service.settings import Settings, get_settings
from service.twilio.signature import sign


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@contextmanager
def _client(settings: Settings, url: str | None) -> Iterator[httpx.Client]:
    """A client for a running service at `url`, or for an in-process app on the embedded default."""
    if url:
        with httpx.Client(base_url=url.rstrip("/"), timeout=20) as client:
            yield client
        return
    from litestar.testing import TestClient  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415

    with TestClient(app=create_app(settings, run_worker=False), base_url=settings.public_url) as client:
        yield client


def post_signed(client: httpx.Client, settings: Settings, path: str, params: dict[str, str]) -> httpx.Response:
    signature = sign(token=settings.signing_token, url=settings.public_url + path, params=params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def _default_to(settings: Settings) -> str:
    from service.brokers import load_brokers  # noqa: PLC0415

    return load_brokers(settings.resolved_brokers_file())[0].twilio_number


def _show(response: httpx.Response) -> None:
    click.echo(f"{response.request.url.path} -> HTTP {response.status_code}")
    if response.text:
        click.echo(response.text)


@click.group()
def simulate() -> None:
    """Send signed webhooks to a running service (--url) or to an in-process one."""


@simulate.command("missed-call")
@click.option("--from", "from_", required=True, help="The caller's number, E.164.")
@click.option("--to", default=None, help="The broker's Twilio number (default: the first broker).")
@click.option("--status", default="no-answer", show_default=True, help="The DialCallStatus to report.")
@click.option("--url", default=None, help="Base URL of a running service (default: in-process).")
def missed_call(from_: str, to: str | None, status: str, url: str | None) -> None:
    """An incoming call that the broker does not answer: /twilio/voice, then the dial action."""
    settings = get_settings()
    to = to or _default_to(settings)
    call = {"AccountSid": "AC" + "0" * 32, "CallSid": _sid("CA"), "From": from_, "To": to, "Caller": from_,
            "Called": to, "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    with _client(settings, url) as client:
        _show(post_signed(client, settings, "/twilio/voice", call))
        _show(post_signed(client, settings, "/twilio/voice/dial-status",
                          {**call, "CallStatus": "in-progress", "DialCallStatus": status, "DialCallSid": _sid("CA")}))


@simulate.command("sms")
@click.option("--from", "from_", required=True, help="The borrower's number, E.164.")
@click.option("--to", default=None, help="The broker's Twilio number (default: the first broker).")
@click.option("--url", default=None, help="Base URL of a running service (default: in-process).")
@click.argument("text")
def sms(from_: str, to: str | None, url: str | None, text: str) -> None:
    """An inbound text from a borrower."""
    settings = get_settings()
    to = to or _default_to(settings)
    sid = _sid("SM")
    params = {"AccountSid": "AC" + "0" * 32, "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid,
              "From": from_, "To": to, "Body": text, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
              "ApiVersion": "2010-04-01"}
    with _client(settings, url) as client:
        _show(post_signed(client, settings, "/twilio/sms", params))
