"""`GET /metrics`: off by default (404), behind `TEXTBACK_METRICS_TOKEN` (401 without it), and after real
signed webhooks and sends it counts webhooks by path and status, texts by outcome, handoffs by reason, and
shows the queue read from the database. Counters are process-wide, so tests compare before and after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import dial_params, sms_params

TOKEN = "metrics-test-token-0123456789"  # a test value
DIAL = "/twilio/voice/dial-status"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_refuse_metrics_with_404_when_no_token_set(client) -> None:
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=AUTH).status_code == 404


@pytest.mark.parametrize("settings_env", [{"metrics_token": TOKEN}])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}])
def test_refuse_metrics_with_401_without_right_bearer_token(client, headers) -> None:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text


@pytest.mark.parametrize("settings_env", [{"metrics_token": TOKEN}])
def test_count_webhooks_texts_and_handoffs_after_real_flow(client, post, twilio_api) -> None:
    """A missed call (opener sent), a reply asking to lock a rate (handoff: ack and alert sent), a forged
    webhook (403): each is in the scrape, and the queue gauges are there."""
    before = scrape(client)
    assert post(client, DIAL, dial_params("no-answer")).status_code == 200
    assert post(client, "/twilio/sms", sms_params("can I lock my rate today?")).status_code == 200
    assert post(client, "/twilio/sms", sms_params("hi"), signature="forged").status_code == 403
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("textback_webhooks_total", path=DIAL, status="200") == 1
    assert grew("textback_webhooks_total", path="/twilio/sms", status="200") == 1
    assert grew("textback_webhooks_total", path="/twilio/sms", status="403") == 1
    assert grew("textback_webhook_duration_seconds_count", path=DIAL) == 1
    assert grew("textback_texts_total", audience="borrower", outcome="sent") == 2  # the opener, the ack
    assert grew("textback_texts_total", audience="broker", outcome="sent") >= 1  # the handoff alert
    assert grew("textback_handoffs_total", reason="rate_lock") == 1
    assert value(after, "textback_queue_due_texts") == 0
    assert value(after, "textback_queue_pending_texts") == 0
    assert ("textback_spool_files", ()) in after
    assert not any(name == "textback_webhooks_total" and dict(labels).get("path") == "/metrics"
                   for name, labels in after)


@pytest.mark.parametrize("settings_env", [{"metrics_token": TOKEN}])
def test_count_sqlite_write_turns_after_missed_call(client, ctx, post, twilio_api) -> None:
    """On SQLite a missed call takes the write turn for its webhook, its send's claim and its outcome, and the
    scrape says so; on PostgreSQL there is no such turn and no such metric."""
    before = scrape(client)
    assert post(client, DIAL, dial_params("no-answer")).status_code == 200
    after = scrape(client)
    names = {name for name, _labels in after}
    if ctx.engine.dialect.name != "sqlite":
        assert not any(name.startswith("textback_sqlite_write_turn") for name in names)
        return
    assert value(after, "textback_sqlite_write_turns_total") - value(before, "textback_sqlite_write_turns_total") >= 3
    assert value(after, "textback_sqlite_write_turn_held_seconds_total") > value(
        before, "textback_sqlite_write_turn_held_seconds_total")
    assert "textback_sqlite_write_turn_wait_seconds_total" in names


@pytest.mark.parametrize("settings_env", [{"metrics_token": TOKEN}])
def test_count_send_failure_and_retry_when_twilio_fails(client, post, twilio_api) -> None:
    twilio_api.routes["messages"].mock(return_value=httpx.Response(500, json={"message": "boom"}))
    before = scrape(client)
    assert post(client, DIAL, dial_params("no-answer")).status_code == 200
    after = scrape(client)
    assert value(after, "textback_failures_total", kind="send_error") - value(
        before, "textback_failures_total", kind="send_error") == 1
    assert value(after, "textback_texts_total", audience="borrower", outcome="retry") - value(
        before, "textback_texts_total", audience="borrower", outcome="retry") == 1
    assert value(after, "textback_queue_pending_texts") == 1


CHILD = """
from service import metrics
metrics.webhook("/twilio/sms", 200, 0.01)
metrics.text("borrower", "sent")
"""

def test_add_up_every_process_in_multiprocess_mode(tmp_path: Path) -> None:
    """Three processes record into one PROMETHEUS_MULTIPROC_DIR; a fourth's exposition shows their sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(3):
        subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 3  # one file per process
    scraper = """
import sys
from service import backlog, metrics
empty = backlog.Backlog(0, 0, 0.0, 0, 0.0, 0, 0.0)
sys.stdout.write(metrics.exposition(lambda: empty).decode())
"""
    out = subprocess.run([sys.executable, "-c", scraper], env=env, check=True, timeout=60, capture_output=True,
                         text=True).stdout
    scraped = samples(out)
    assert value(scraped, "textback_webhooks_total", path="/twilio/sms", status="200") == 3
    assert value(scraped, "textback_webhook_duration_seconds_count", path="/twilio/sms") == 3
    assert value(scraped, "textback_texts_total", audience="borrower", outcome="sent") == 3
    assert ("textback_queue_due_texts", ()) in scraped
