"""CRM webhook failures are visible and retryable: GET /api/webhooks/deliveries (scoped to the principal's
brokers, filtered, paged), POST /api/webhooks/deliveries/{id}/retry, and `textback webhooks list / retry`."""

from __future__ import annotations

import httpx
import pytest
import respx
from click.testing import CliRunner, Result
from sqlmodel import Session, select

from service.cli import main
from service.models import Broker, WebhookDelivery
from tests import test_crm_webhooks
from tests.api_helpers import ADMIN, MARCUS_CELL, TEAM_YAML, bearer, cookie_only, missed, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_CELL, CALLER
from tests.test_crm_webhooks import CRM_URL, OTHER_URL, deliveries, sweep

API = "/api/webhooks/deliveries"
webhook_events = test_crm_webhooks.webhook_events
crm = test_crm_webhooks.crm


@pytest.fixture
def brokers_file(tmp_path, webhook_events):
    """Dana's and Marcus's CRM webhooks, and Dana's team (an admin sees every broker)."""
    path = tmp_path / "brokers.yaml"
    path.write_text(test_crm_webhooks.brokers_yaml(webhook_events, base=TEAM_YAML))
    return path


@pytest.fixture
def other_crm(twilio_api: respx.MockRouter) -> respx.Route:
    """Marcus's CRM endpoint: it accepts every delivery."""
    return twilio_api.post(OTHER_URL, name="other_crm").mock(return_value=httpx.Response(200))


def broker_id(ctx, number: str) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(Broker.id).where(Broker.twilio_number == number)).one()


def callers(n: int) -> list[str]:
    return [f"+1415555{1300 + i:04d}" for i in range(n)]


@pytest.fixture
def failed_and_delivered(client, post, ctx, crm, other_crm) -> tuple[list[int], list[int]]:
    """Dana's CRM refuses (400: failed at once) two leads' lead.created; Marcus's accepts one."""
    crm.return_value = httpx.Response(400)
    for caller in callers(2):
        missed(client, post, caller=caller)
    missed(client, post, to=BROKER2)
    sweep(client)
    rows = deliveries(ctx)
    dana = [r.id for r in rows if r.url == CRM_URL]
    marcus = [r.id for r in rows if r.url == OTHER_URL]
    assert [r.status for r in rows if r.url == CRM_URL] == ["failed", "failed"]
    assert [r.status for r in rows if r.url == OTHER_URL] == ["delivered"]
    return dana, marcus


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["deliveries"]]


# ---------------------------------------------------------------------------------------------------------
# The list


def test_list_deliveries_of_own_brokers_only(client, ctx, failed_and_delivered) -> None:
    dana, marcus = failed_and_delivered
    assert ids(client.get(API, headers=bearer(ctx, broker_id(ctx, BROKER)))) == sorted(dana, reverse=True)
    assert ids(client.get(API, headers=signed_in(ctx, MARCUS_CELL))) == marcus
    assert ids(client.get(API, headers=signed_in(ctx, ADMIN))) == sorted(dana + marcus, reverse=True)
    [item] = client.get(API, headers=signed_in(ctx, MARCUS_CELL)).json()["deliveries"]
    row = next(r for r in deliveries(ctx) if r.id == item["id"])
    assert item == {
        "id": row.id, "delivery_id": row.delivery_id, "broker": BROKER2, "lead_id": row.lead_id, "url": OTHER_URL,
        "event": "lead.created", "status": "delivered", "attempts": 1, "response_status": 200, "last_error": None,
        "created_at": item["created_at"], "delivered_at": item["delivered_at"], "next_attempt_at": None,
    }
    assert item["created_at"].endswith("Z")
    assert item["delivered_at"].endswith("Z")


def test_list_deliveries_of_alert_link_lead_only(client, ctx, failed_and_delivered) -> None:
    """A session opened from an alert link sees that lead's deliveries and no other."""
    rows = {r.id: r for r in deliveries(ctx)}
    first = failed_and_delivered[0][0]
    headers = signed_in(ctx, BROKER_CELL, lead_id=rows[first].lead_id)
    assert ids(client.get(API, headers=headers)) == [first]


def test_list_deliveries_by_status_in_pages(client, ctx, failed_and_delivered) -> None:
    dana, marcus = failed_and_delivered
    admin = signed_in(ctx, ADMIN)
    assert ids(client.get(API, params={"status": "failed"}, headers=admin)) == sorted(dana, reverse=True)
    assert ids(client.get(API, params={"status": "delivered"}, headers=admin)) == marcus
    first = client.get(API, params={"limit": 2}, headers=admin).json()
    assert len(first["deliveries"]) == 2
    second = client.get(API, params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
    assert second["next_cursor"] is None
    assert [d["id"] for d in first["deliveries"] + second["deliveries"]] == sorted(dana + marcus, reverse=True)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "lost"}, "status"), ({"cursor": "bGVhZDox"}, "cursor"), ({"cursor": "%%%"}, "cursor"),
     ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit")],
)
def test_list_deliveries_refuses_bad_parameter(client, ctx, params, field) -> None:
    response = client.get(API, params=params, headers=bearer(ctx, broker_id(ctx, BROKER)))
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}: ")


def test_list_deliveries_needs_sign_in(client) -> None:
    assert client.get(API).status_code == 401
    assert client.post(f"{API}/1/retry").status_code == 401


# ---------------------------------------------------------------------------------------------------------
# Retry


def test_retry_failed_delivery_then_deliver(client, ctx, crm, failed_and_delivered) -> None:
    target = failed_and_delivered[0][0]
    crm.return_value = httpx.Response(200)
    response = client.post(f"{API}/{target}/retry", headers=bearer(ctx, broker_id(ctx, BROKER)))
    assert response.status_code == 200, response.text
    item = response.json()
    assert (item["id"], item["status"], item["attempts"], item["last_error"]) == (target, "pending", 0,
                                                                                 "HTTP 400 Bad Request")
    assert item["next_attempt_at"] is not None
    sweep(client)
    row = next(r for r in deliveries(ctx) if r.id == target)
    assert (row.status, row.attempts, row.response_status, row.last_error) == ("delivered", 1, 200, None)
    bodies = test_crm_webhooks.received(crm)
    assert bodies[-1]["id"] == row.delivery_id


def test_retry_from_browser_needs_csrf(client, ctx, failed_and_delivered) -> None:
    target = failed_and_delivered[0][0]
    headers = signed_in(ctx, BROKER_CELL)
    refused = client.post(f"{API}/{target}/retry", headers=cookie_only(headers))
    assert refused.status_code == 403
    assert next(r for r in deliveries(ctx) if r.id == target).status == "failed"
    assert client.post(f"{API}/{target}/retry", headers=headers).json()["status"] == "pending"


def test_retry_refuses_delivery_not_failed_or_not_yours(client, ctx, failed_and_delivered) -> None:
    dana, marcus = failed_and_delivered
    marcus_token = bearer(ctx, broker_id(ctx, BROKER2))
    assert client.post(f"{API}/{dana[0]}/retry", headers=marcus_token).status_code == 404
    assert client.post(f"{API}/999999/retry", headers=marcus_token).status_code == 404
    delivered = client.post(f"{API}/{marcus[0]}/retry", headers=marcus_token)
    assert delivered.status_code == 409
    assert delivered.json()["error"] == "only a failed delivery can be retried; this one is delivered"


def test_retry_refuses_delivery_of_removed_webhook(client, ctx, failed_and_delivered) -> None:
    with Session(ctx.engine) as session:
        broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
        broker.webhooks = []
        session.add(broker)
        session.commit()
    response = client.post(f"{API}/{failed_and_delivered[0][0]}/retry", headers=bearer(ctx, broker_id(ctx, BROKER)))
    assert response.status_code == 409
    assert response.json()["error"] == "webhook removed from brokers file: add the webhook back before retrying"


# ---------------------------------------------------------------------------------------------------------
# The command line


def webhooks_cli(ctx, *args: str) -> Result:
    return CliRunner().invoke(main, ["webhooks", *args], env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})


def table(result: Result) -> list[dict[str, str]]:
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def test_cli_lists_deliveries_by_status_and_broker(ctx, failed_and_delivered) -> None:
    dana, marcus = failed_and_delivered
    everything = table(webhooks_cli(ctx, "list"))
    assert [int(r["id"]) for r in everything] == sorted(dana + marcus, reverse=True)
    failed = table(webhooks_cli(ctx, "list", "--status", "failed"))
    assert {(r["status"], r["broker"], r["response_status"], r["last_error"]) for r in failed} == {
        ("failed", BROKER, "400", "HTTP 400 Bad Request")}
    assert [int(r["id"]) for r in table(webhooks_cli(ctx, "list", "--broker", BROKER2))] == marcus
    assert CALLER not in webhooks_cli(ctx, "list").output  # no bodies


def test_cli_retries_failed_delivery(client, ctx, crm, failed_and_delivered) -> None:
    target = failed_and_delivered[0][0]
    result = webhooks_cli(ctx, "retry", str(target))
    assert result.exit_code == 0, result.output
    assert f"delivery {target} (lead.created to {CRM_URL}) queued again" in result.output
    crm.return_value = httpx.Response(204)
    sweep(client)
    assert next(r for r in deliveries(ctx) if r.id == target).status == "delivered"


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["retry", "MARCUS"], 1, "only a failed delivery can be retried; this one is delivered"),
        (["retry", "999999"], 1, "no such webhook delivery"),
        (["retry", "abc"], 2, "'abc' is not a valid integer"),
        (["list", "--status", "lost"], 2, "'lost' is not one of"),
        (["list", "--broker", "+13125550100"], 2, "no broker with Twilio number +13125550100"),
        (["list", "--broker", "dana"], 2, "'dana' is not a phone number"),
    ],
)
def test_cli_refuses_bad_request(ctx, failed_and_delivered, args, exit_code, message) -> None:
    args = [str(failed_and_delivered[1][0]) if a == "MARCUS" else a for a in args]
    result = webhooks_cli(ctx, *args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output


def test_cli_refuses_missing_database(tmp_path) -> None:
    result = CliRunner().invoke(main, ["webhooks", "list"],
                                env={"TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"})
    assert result.exit_code == 1
    assert "no database at" in result.output


def test_deliveries_rows_hold_no_secret(ctx, failed_and_delivered) -> None:
    with Session(ctx.engine) as session:
        for row in session.exec(select(WebhookDelivery)):
            assert test_crm_webhooks.SECRET not in row.model_dump_json()
