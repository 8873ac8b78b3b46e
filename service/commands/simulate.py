"""`textback simulate`: drive the service with correctly signed Twilio webhooks, no Twilio account needed.

The forms and signatures come from service.twilio.fake, as the tests, evals and benchmarks build them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import httpx

from service.logs import configure_logging
from service.settings import Settings, get_settings
from service.twilio.fake import call_form, dial_status_form, random_sid, signature_headers, sms_form


@contextmanager
def _client(settings: Settings, url: str | None) -> Iterator[httpx.Client]:
    """A client for a running service at `url`, or for an in-process app on the embedded default."""
    if url:
        with httpx.Client(base_url=url.rstrip("/"), timeout=20) as client:
            yield client
        return
    from litestar.testing import TestClient  # lazy: only an in-process run needs the app (seconds to import)

    from service.app import create_app  # lazy: as above; `simulate --url` posts to a running service

    configure_logging(settings.log_level)  # this process serves the app: it logs as `textback serve` does
    with TestClient(app=create_app(settings, run_worker=False), base_url=settings.public_url) as client:
        yield client


def post_signed(client: httpx.Client, settings: Settings, path: str, params: dict[str, str]) -> httpx.Response:
    """The webhook, signed as Twilio signs it; a service that cannot be reached ends the command in one line."""
    headers = signature_headers(token=settings.signing_token, public_url=settings.public_url, path=path, form=params)
    try:
        return client.post(path, data=params, headers=headers)
    except httpx.HTTPError as exc:  # refused, timed out, not an http(s) URL
        raise click.ClickException(f"cannot reach the service at {client.base_url}: {type(exc).__name__}") from None


def _default_to(settings: Settings) -> str:
    from service.brokers import load_brokers  # lazy: only without --to (pydantic models: ~0.3 s)

    return load_brokers(settings.resolved_brokers_file())[0].twilio_number


def _show(response: httpx.Response) -> None:
    """The answer, as the service gave it; a refusal (4xx, 5xx) stops the command with exit status 1."""
    click.echo(f"{response.request.url.path} -> HTTP {response.status_code}")
    if response.text:
        click.echo(response.text)
    if response.is_error:
        raise click.ClickException(f"the service refused {response.request.url.path} (HTTP {response.status_code})")


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
    call_sid = random_sid("CA")
    with _client(settings, url) as client:
        _show(post_signed(client, settings, "/twilio/voice", call_form(call_sid, from_, to)))
        _show(post_signed(client, settings, "/twilio/voice/dial-status",
                          dial_status_form(call_sid, from_, to, status, DialCallSid=random_sid("CA"))))


@simulate.command("sms")
@click.option("--from", "from_", required=True, help="The borrower's number, E.164.")
@click.option("--to", default=None, help="The broker's Twilio number (default: the first broker).")
@click.option("--url", default=None, help="Base URL of a running service (default: in-process).")
@click.argument("text")
def sms(from_: str, to: str | None, url: str | None, text: str) -> None:
    """An inbound text from a borrower."""
    settings = get_settings()
    to = to or _default_to(settings)
    with _client(settings, url) as client:
        _show(post_signed(client, settings, "/twilio/sms", sms_form(text, from_, to, sid=random_sid("SM"))))
