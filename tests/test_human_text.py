"""POST /api/leads/{id}/messages: a person's own text from the broker's number, through the real app, the real
output guard, the sender and the Twilio SDK (only its HTTP boundary mocked); every refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.audit import iter_events
from service.errors import PolicyError
from service.models import Lead, LeadEvent, OutboundMessage, utcnow
from service.sending.human_policy import HumanTextPolicy, load_human_policy
from tests.api_helpers import MEMBER, TEAM_YAML, bearer, cookie_only, missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_CELL, CALLER, POLICIES, sent_texts

RATE = "Rates from 5.9% this week, want to lock one in?"
HELLO = "Hi, this is Dana. Is now a good time to talk about your refinance?"
NIGHT = "2026-06-11T07:30:00+00:00"  # 00:30 in California


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


@pytest.fixture
def human_policy() -> HumanTextPolicy | None:
    """The policy for a person's texts, when a test replaces the one in policies/sending/human.yaml."""
    return None


@pytest.fixture
def caps() -> dict[str, int]:
    """Caps changed from the shipped sending policy, when a test needs them."""
    return {}


@pytest.fixture
def collaborators(output_guard, reply_rules, sending_policy, human_policy, caps, tmp_path) -> dict[str, object]:
    if caps:
        from tests.test_gates import policy_with

        sending_policy = policy_with(tmp_path, **caps)
    policy = sending_policy if human_policy is None else replace(sending_policy, human=human_policy)
    return {"guard": output_guard, "rules": reply_rules, "sending_policy": policy}


@pytest.fixture
def lead_id(client, post, ctx) -> int:
    missed(client, post)
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == CALLER, Lead.broker_id == 1)).one()


def text(client, lead_id: int, headers: dict[str, str], body: object = HELLO, **extra: object):
    return client.post(f"/api/leads/{lead_id}/messages", json={"body": body, **extra}, headers=headers)


def human_rows(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "human")))


def events_of(ctx, kind: str) -> list[LeadEvent]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(LeadEvent).where(LeadEvent.kind == kind)))


def to_borrower(twilio_api) -> list[dict[str, str]]:
    return [t for t in sent_texts(twilio_api["messages"]) if t["To"] == CALLER]


def test_send_human_text_from_business_number_as_the_user(client, ctx, twilio_api, lead_id) -> None:
    response = text(client, lead_id, signed_in(ctx))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["direction"], body["author"], body["author_kind"], body["author_phone"]) == (
        "out", "Dana Whitfield", "user", BROKER_CELL)
    assert (body["template_id"], body["purpose"], body["deferred_until"]) == ("human", "human", None)
    assert body["guard"]["allowed"] is True
    sent = to_borrower(twilio_api)[-1]
    assert (sent["From"], sent["Body"]) == (BROKER, HELLO)
    [row] = human_rows(ctx)
    assert (row.status, row.author, row.author_name, row.guard_override) == ("sent", BROKER_CELL, "Dana Whitfield",
                                                                             False)
    [event] = events_of(ctx, "human_text")
    assert event.actor == BROKER_CELL
    assert event.data["message_id"] == row.id
    assert len(events_of(ctx, "bot_stopped")) == 1
    detail = client.get(f"/api/leads/{lead_id}", headers=signed_in(ctx)).json()
    assert detail["messages"][-1]["author"] == "Dana Whitfield"
    assert detail["human_by"] == BROKER_CELL


def test_send_human_text_with_bearer_token_as_the_crm(client, ctx, twilio_api, lead_id) -> None:
    response = text(client, lead_id, bearer(ctx, 1, name="Shape CRM"))
    assert response.status_code == 201, response.text
    assert (response.json()["author"], response.json()["author_kind"]) == ("Shape CRM", "token")
    [row] = human_rows(ctx)
    assert row.author.startswith("token:")


def test_stop_bot_after_human_text(client, post, ctx, twilio_api, lead_id) -> None:
    """The borrower's answer to the person goes to the team, not to the bot's next question."""
    assert text(client, lead_id, signed_in(ctx)).status_code == 201
    reply(client, post, "yes, refinance, in about two months")
    assert [t["Body"] for t in to_borrower(twilio_api)][1:] == [HELLO]
    assert any("refinance" in t["Body"] for t in sent_texts(twilio_api["messages"]) if t["To"] != CALLER)


@pytest.mark.parametrize(("headers", "status"), [
    ("none", 401),
    ("forged", 401),
    ("cookie_without_csrf", 403),
    ("wrong_csrf", 403),
])
def test_refuse_human_text_without_signed_in_user_or_csrf(client, ctx, twilio_api, lead_id, headers, status) -> None:
    session = signed_in(ctx)
    chosen = {"none": {}, "forged": {"Authorization": "Bearer forged"}, "cookie_without_csrf": cookie_only(session),
              "wrong_csrf": {**session, "x-csrf-token": "not-the-token"}}[headers]
    assert text(client, lead_id, chosen).status_code == status
    assert human_rows(ctx) == []


@pytest.mark.parametrize("who", ["member_foreign", "token_foreign", "missing"])
def test_refuse_human_text_to_lead_not_visible(client, post, ctx, twilio_api, lead_id, who) -> None:
    missed(client, post, to=BROKER2)
    with Session(ctx.engine) as session:
        marcus_lead = session.exec(select(Lead.id).where(Lead.broker_id == 2)).one()
    target, headers = {"member_foreign": (marcus_lead, signed_in(ctx, MEMBER)),
                       "token_foreign": (marcus_lead, bearer(ctx, 1)),
                       "missing": (999999, signed_in(ctx))}[who]
    response = text(client, target, headers)
    assert response.status_code == 404
    assert response.json()["error"] == "lead not found"
    assert human_rows(ctx) == []


@pytest.mark.parametrize(("payload", "field"), [
    ({"body": ""}, "body"),
    ({"body": "   \n "}, "body"),
    ({"body": "x" * 1601}, "body"),
    ({"body": 42}, "body"),
    ({}, "body"),
    ({"body": HELLO, "confirm": "yes"}, "confirm"),
])
def test_refuse_bad_human_text(client, ctx, twilio_api, lead_id, payload, field) -> None:
    response = client.post(f"/api/leads/{lead_id}/messages", json=payload, headers=signed_in(ctx))
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{field}:")
    assert human_rows(ctx) == []


def test_send_human_text_of_exactly_1600_characters(client, ctx, twilio_api, lead_id) -> None:
    assert text(client, lead_id, signed_in(ctx), body="y" * 1600).status_code == 201


def test_refuse_human_text_after_opt_out(client, post, ctx, twilio_api, lead_id) -> None:
    reply(client, post, "STOP")
    response = text(client, lead_id, signed_in(ctx))
    assert response.status_code == 409
    assert response.json()["error"] == "the borrower opted out; call, don't text"
    assert human_rows(ctx) == []


def test_refuse_human_text_to_number_that_cannot_take_texts(client, ctx, twilio_api, lead_id) -> None:
    with Session(ctx.engine) as session:
        lead = session.get(Lead, lead_id)
        lead.not_textable_reason = "line_type_landline"
        session.add(lead)
        session.commit()
    response = text(client, lead_id, signed_in(ctx))
    assert response.status_code == 409
    assert "cannot take texts (line type landline); call instead" in response.json()["error"]


def test_refuse_flagged_human_text_until_confirmed_then_record_override(client, ctx, twilio_api, lead_id) -> None:
    """guard: warn (the default): the person sees what was flagged, and may send it anyway on the record."""
    refused = text(client, lead_id, signed_in(ctx), body=RATE)
    assert refused.status_code == 422
    details = refused.json()["details"]
    assert details["guard"] == "warn"
    assert details["confirm"] is True
    assert "no-rate-quotes" in {v["rule"] for v in details["violations"]}
    assert human_rows(ctx) == []
    assert events_of(ctx, "human_text") == []
    sent = text(client, lead_id, signed_in(ctx), body=RATE, confirm=True)
    assert sent.status_code == 201, sent.text
    [row] = human_rows(ctx)
    assert row.guard_override is True
    assert row.guard_result["overridden"] is True
    assert "no-rate-quotes" in {v["rule"] for v in row.guard_result["violations"]}
    [event] = events_of(ctx, "human_text")
    assert event.data["override"] is True
    assert "no-rate-quotes" in event.data["violations"]
    assert to_borrower(twilio_api)[-1]["Body"] == RATE


@pytest.mark.parametrize("human_policy", [HumanTextPolicy(guard="block")])
@pytest.mark.parametrize("confirm", [False, True])
def test_refuse_flagged_human_text_when_policy_blocks(client, ctx, twilio_api, lead_id, confirm) -> None:
    response = text(client, lead_id, signed_in(ctx), body=RATE, confirm=confirm)
    assert response.status_code == 422
    assert response.json()["details"]["guard"] == "block"
    assert "confirm" not in response.json()["details"]
    assert human_rows(ctx) == []


@pytest.mark.parametrize("human_policy", [HumanTextPolicy(guard="off")])
def test_send_unchecked_human_text_when_policy_is_off(client, ctx, twilio_api, lead_id) -> None:
    response = text(client, lead_id, signed_in(ctx), body=RATE)
    assert response.status_code == 201
    [row] = human_rows(ctx)
    assert row.guard_result == {"mode": "off", "checked": False}
    assert row.guard_override is None
    assert to_borrower(twilio_api)[-1]["Body"] == RATE


def test_hold_human_text_for_quiet_hours_then_send(client, post, ctx, twilio_api, clock) -> None:
    """hold (the default): the text waits for the borrower's morning, and the answer says until when."""
    clock.move_to(NIGHT)
    missed(client, post)
    lead_id = human_lead(ctx)
    response = text(client, lead_id, signed_in(ctx))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert datetime.fromisoformat(body["deferred_until"].replace("Z", "+00:00")) == datetime.fromisoformat(
        "2026-06-11T15:00:00+00:00")  # 08:00 in California
    assert [t["Body"] for t in to_borrower(twilio_api)][1:] == []
    from service import sender

    clock.move_to("2026-06-11T15:00:01+00:00")
    sender.send_due(ctx)
    assert [t["Body"] for t in to_borrower(twilio_api)][1:] == [HELLO]


def test_count_held_human_text_as_contact_only_once_it_goes_out(client, post, ctx, twilio_api, clock) -> None:
    """A text held for quiet hours is not yet a contact: the report's "reached by a person" and the CRM's
    human_contact come when it is sent, and never when a STOP suppresses it first."""
    from service import sender

    clock.move_to(NIGHT)
    missed(client, post)
    lead_id = human_lead(ctx)
    assert text(client, lead_id, signed_in(ctx)).status_code == 201
    assert events_of(ctx, "human_contact") == []
    assert [e.kind for e in events_of(ctx, "bot_stopped")] == ["bot_stopped"]  # the person took over at once
    clock.move_to("2026-06-11T15:00:01+00:00")
    sender.send_due(ctx)
    [contact] = events_of(ctx, "human_contact")
    assert contact.data["how"] == "text"
    assert contact.at >= datetime.fromisoformat("2026-06-11T15:00:00+00:00")


def test_count_human_text_as_contact_when_its_broker_left_memory_before_the_send(client, post, ctx, twilio_api,
                                                                                monkeypatch) -> None:
    """The contact is recorded from the broker's row when the brokers in memory no longer hold it (a reload that
    removed the broker between the text being queued and sent)."""
    from service import sender

    missed(client, post)
    lead_id = human_lead(ctx)
    monkeypatch.setattr(client.app.state.worker, "after_webhook", lambda send_ids, inbound_ids: None)
    assert text(client, lead_id, signed_in(ctx)).status_code == 201
    assert events_of(ctx, "human_contact") == []
    monkeypatch.setattr(ctx, "brokers_by_number", {})
    sender.send_due(ctx)
    [contact] = events_of(ctx, "human_contact")
    assert contact.data["how"] == "text"


def test_never_count_held_human_text_suppressed_by_stop_as_contact(client, post, ctx, twilio_api, clock) -> None:
    from service import sender

    clock.move_to(NIGHT)
    missed(client, post)
    lead_id = human_lead(ctx)
    assert text(client, lead_id, signed_in(ctx)).status_code == 201
    reply(client, post, "STOP")
    clock.move_to("2026-06-11T15:00:01+00:00")
    sender.send_due(ctx)
    assert HELLO not in [t["Body"] for t in to_borrower(twilio_api)]  # the opt-out confirmation went, not it
    assert events_of(ctx, "human_contact") == []
    report = client.get("/api/report", headers=signed_in(ctx)).json()
    assert report["reached_by_human"] == 0


@pytest.mark.parametrize("human_policy", [HumanTextPolicy(quiet_hours="refuse")])
def test_refuse_human_text_in_quiet_hours_when_policy_refuses(client, post, ctx, twilio_api, clock) -> None:
    clock.move_to(NIGHT)
    missed(client, post)
    response = text(client, human_lead(ctx), signed_in(ctx))
    assert response.status_code == 409
    assert response.json()["error"].startswith("quiet hours in CA until 08:00 local")
    assert response.json()["details"]["opens_at"] == "2026-06-11T15:00:00Z"
    assert human_rows(ctx) == []


def human_lead(ctx) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == CALLER)).one()


def test_export_human_text_with_author_and_override(client, ctx, twilio_api, lead_id) -> None:
    assert text(client, lead_id, signed_in(ctx), body=RATE, confirm=True).status_code == 201
    [event] = [e for e in iter_events(ctx.engine, since=utcnow() - timedelta(hours=1))
               if e.get("purpose") == "human"]
    assert (event["author"], event["author_name"], event["guard_override"]) == (BROKER_CELL, "Dana Whitfield", True)


# -- the policy file ------------------------------------------------------------------------------------------

def test_load_human_policy_from_policy_set() -> None:
    policy = load_human_policy(POLICIES)
    assert (policy.guard, policy.quiet_hours) == ("warn", "hold")


def test_load_default_human_policy_when_file_absent(tmp_path: Path) -> None:
    assert load_human_policy(tmp_path) == HumanTextPolicy()


@pytest.mark.parametrize(("change", "field"), [
    (("guard: warn", "guard: maybe"), "guard"),
    (("quiet_hours: hold", "quiet_hours: later"), "quiet_hours"),
    (("guard: warn", "guard: warn\nsend_as: anyone"), "send_as"),
])
def test_refuse_bad_human_policy_naming_field(tmp_path: Path, change, field) -> None:
    folder = tmp_path / "sending"
    folder.mkdir()
    source = (POLICIES / "sending" / "human.yaml").read_text()
    (folder / "human.yaml").write_text(source.replace(*change))
    with pytest.raises(PolicyError) as caught:
        load_human_policy(tmp_path)
    assert caught.value.field is not None
    assert field in caught.value.field


def test_human_policy_examples_agree_with_guard(output_guard) -> None:
    assert load_human_policy(POLICIES).example_findings(output_guard) == []


def test_report_human_policy_example_the_guard_disagrees_with(output_guard) -> None:
    policy = load_human_policy(POLICIES)
    wrong = replace(policy, examples=policy.examples.model_copy(update={"must_match": [HELLO]}))
    [finding] = wrong.example_findings(output_guard)
    assert "must_match example" in finding
    assert "passes the output guard" in finding


@pytest.mark.parametrize("caps", [{"per_broker_per_day": 3}])
def test_send_opener_after_human_texts_fill_broker_daily_cap(caps, client, post, ctx, twilio_api) -> None:
    """A person's texts are not automated: they never use up the broker's daily cap on automated texts."""
    missed(client, post)
    with Session(ctx.engine) as session:
        first = session.exec(select(Lead.id).where(Lead.phone == CALLER)).one()
    for body in (HELLO, "Following up on your call: when suits you?"):
        assert text(client, first, signed_in(ctx), body).status_code == 201
    other = "+14155550177"
    missed(client, post, caller=other)
    assert [t["To"] for t in sent_texts(twilio_api["messages"])].count(other) == 1
