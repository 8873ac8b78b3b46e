"""`textback demo seed`: a few days of history played through the real webhooks and leads API in dry-run, each
event at its own moment; refused with Twilio credentials and on a database holding a lead it did not make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlmodel import Session, col, select

from service.cli import main
from service.context import build_context
from service.demo.history import SCRIPTS, TEAM_TEXTS, THANKS
from service.demo.ownership import lead_counts
from service.demo.seed import Summary, seed, seed_settings
from service.errors import SeedRefused
from service.models import CallEvent, InboundMessage, Lead, LeadEvent, OutboundMessage, UserSession
from service.settings import DEV_AUTH_TOKEN
from tests.api_helpers import ADMIN, TEAM_YAML, missed, signed_in
from tests.helpers import BROKER, BROKER2, TWILIO_SID, TWILIO_TOKEN

MONDAY = datetime(2026, 6, 8, 21, 0, tzinfo=UTC)  # 14:00 in Los Angeles: three days back holds a weekend
DAYS = 3


@pytest.fixture
def settings_env(tmp_path: Path) -> dict[str, object]:
    """Dry-run (no Twilio credentials), as the seed requires, with the spool it runs with."""
    return {"twilio_account_sid": None, "twilio_auth_token": None, "spool_dir": tmp_path / "seed-spool"}


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """The test brokers, Dana's with a team (Ada, admin of the file; Mo, a member), Marcus's without."""
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


@pytest.fixture
def seeded(ctx, clock) -> Summary:
    """Three days of history up to a Monday afternoon, seed 5 (its draw holds every kind of conversation)."""
    clock.move_to(MONDAY)
    return seed(ctx, days=DAYS, seed=5)


def seed_cli(env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(main, ["demo", "seed", "--days", str(DAYS)], env=env)


def moments(ctx) -> list[datetime]:
    """Every timestamp the history wrote: calls, texts in and out, lead events."""
    with Session(ctx.engine) as session:
        return [*session.exec(select(CallEvent.created_at)), *session.exec(select(InboundMessage.received_at)),
                *session.exec(select(OutboundMessage.created_at)), *session.exec(select(LeadEvent.at))]


def counts(ctx) -> dict[str, object]:
    with Session(ctx.engine) as session:
        kinds = [e.kind for e in session.exec(select(LeadEvent))]
        leads = session.exec(select(Lead).order_by(col(Lead.phone), col(Lead.broker_id))).all()
        return {"calls": len(session.exec(select(CallEvent).where(CallEvent.kind == "dial-status")).all()),
                "events": sorted((k, kinds.count(k)) for k in set(kinds)),
                "leads": [(lead.phone, lead.state, lead.outcome) for lead in leads]}


# -- refusals ---------------------------------------------------------------------------------------------------

def test_seed_refuses_database_with_real_lead(client, post, ctx) -> None:
    """A lead made by a real webhook (no demo SID): the seed adds nothing, from the command line or not."""
    missed(client, lambda c, path, form: post(c, path, form, token=DEV_AUTH_TOKEN))
    with pytest.raises(SeedRefused, match="holds 1 lead the demo seed did not create"):
        seed(ctx, days=DAYS, seed=1)
    result = seed_cli({"TEXTBACK_DATABASE_URL": ctx.settings.database_url, "TWILIO_ACCOUNT_SID": None,
                       "TWILIO_AUTH_TOKEN": None})
    assert result.exit_code == 1, result.output
    assert "refused: the database holds 1 lead the demo seed did not create" in result.output
    assert "only fills an empty database, or one it seeded itself" in result.output
    assert lead_counts(ctx.engine) == (0, 1)
    with Session(ctx.engine) as session:
        assert len(session.exec(select(CallEvent)).all()) == 1


def test_seed_refuses_with_twilio_credentials(tmp_path: Path) -> None:
    """It would text real people: refused before any database is created."""
    database = tmp_path / "fresh.db"
    result = seed_cli({"TEXTBACK_DATABASE_URL": f"sqlite:///{database}", "TWILIO_ACCOUNT_SID": TWILIO_SID,
                       "TWILIO_AUTH_TOKEN": TWILIO_TOKEN})
    assert result.exit_code == 1, result.output
    assert "refused: Twilio credentials are configured" in result.output
    assert not database.exists()


def test_seed_refuses_context_with_twilio_credentials(settings, collaborators) -> None:
    live = build_context(settings.model_copy(update={"twilio_account_sid": TWILIO_SID,
                                                     "twilio_auth_token": TWILIO_TOKEN}), **collaborators)
    try:
        with pytest.raises(SeedRefused, match="would text real people"):
            seed(live, days=DAYS, seed=1)
        assert lead_counts(live.engine) == (0, 0)
    finally:
        live.close()


# -- the history ------------------------------------------------------------------------------------------------

def test_seed_fills_database_with_history_spread_over_days(ctx, seeded) -> None:
    events = seeded.events
    assert seeded.leads > 5
    assert seeded.missed > seeded.answered > 0
    assert events["opener"] >= seeded.leads
    assert events["reply"] > 0
    assert events["human_text"] > 0
    assert events["human_contact"] > 0
    assert events["outcome"] > 0
    assert lead_counts(ctx.engine) == (seeded.leads, 0)
    start, end = MONDAY - timedelta(days=DAYS), MONDAY + timedelta(minutes=1)
    stamps = moments(ctx)
    assert all(start <= at <= end for at in stamps), (min(stamps), max(stamps))
    la = ZoneInfo("America/Los_Angeles")
    with Session(ctx.engine) as session:
        calls = session.exec(select(CallEvent.created_at).where(CallEvent.kind == "dial-status")).all()
        states = set(session.exec(select(Lead.state)))
        closed = set(session.exec(select(Lead.closed_reason)))
    assert len({at.astimezone(la).date() for at in calls}) >= DAYS  # every day of the window has calls
    assert any(at.astimezone(la).weekday() >= 5 for at in calls)  # the weekend too
    assert {"opened", "asking", "ready", "handoff", "closed"} <= states
    assert "opted_out" in closed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the fill test covers PostgreSQL
def test_seed_team_acts_in_office_hours_through_the_api(ctx, seeded) -> None:
    """The team's texts and outcomes are theirs (signed-in users of the brokers file), in office hours."""
    with Session(ctx.engine) as session:
        acts = session.exec(select(LeadEvent).where(col(LeadEvent.kind).in_(["human_text", "outcome"]))).all()
        texts = session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "human")).all()
        live = session.exec(select(UserSession).where(col(UserSession.revoked_at).is_(None))).all()
    zones = {ctx.broker_for(n).id: ZoneInfo(ctx.broker_for(n).timezone) for n in (BROKER, BROKER2)}
    assert acts
    for event in acts:
        local = event.at.astimezone(zones[event.broker_id])
        assert event.actor.startswith("+1")
        assert local.weekday() < 6, (event.kind, local)
        assert 8 <= local.hour < 19, (event.kind, local)
    assert texts
    assert all(t.author and t.author_name for t in texts)
    assert live == []  # the seed signs its people out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the fill test covers PostgreSQL
def test_console_api_lists_seeded_leads(client, ctx, seeded) -> None:
    response = client.get("/api/leads", params={"limit": 200}, headers=signed_in(ctx, ADMIN))
    assert response.status_code == 200, response.text
    with Session(ctx.engine) as session:
        ids = set(session.exec(select(Lead.id)))
    assert {lead["id"] for lead in response.json()["leads"]} == ids
    assert len(ids) == seeded.leads


def test_seed_is_deterministic_for_the_same_seed(ctx, clock, settings, collaborators, tmp_path: Path) -> None:
    clock.move_to(MONDAY)
    first = seed(ctx, days=DAYS, seed=11)
    other = build_context(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'other.db'}"}),
                          **collaborators)
    try:
        clock.move_to(MONDAY)
        second = seed(other, days=DAYS, seed=11)
        assert (second.calls, second.missed, second.leads, second.events) == (
            first.calls, first.missed, first.leads, first.events)
        assert counts(other) == counts(ctx)
    finally:
        other.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the fill test covers PostgreSQL
def test_seed_again_continues_where_the_last_run_ended(ctx, clock, seeded) -> None:
    """A second run adds the history since the first one, not a second copy of its days."""
    with Session(ctx.engine) as session:
        before = set(session.exec(select(CallEvent.call_sid)))
    clock.move_to(MONDAY + timedelta(days=1))
    again = seed(ctx, days=DAYS, seed=5)
    assert again.start > MONDAY - timedelta(days=1)
    assert again.calls > 0
    with Session(ctx.engine) as session:
        added = session.exec(select(CallEvent).where(col(CallEvent.call_sid).not_in(before))).all()
    assert added
    assert all(event.created_at > again.start for event in added)
    assert lead_counts(ctx.engine)[1] == 0
    clock.move_to(MONDAY + timedelta(days=1, seconds=30))
    assert seed(ctx, days=DAYS, seed=5).skipped


# -- what the history says --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", sorted({t for _, _, texts in SCRIPTS for t in texts} | set(THANKS)))
def test_script_text_is_settled_by_the_rules(reply_rules, text: str) -> None:
    """No demo reply waits for an LLM (the seed runs with none)."""
    assert not reply_rules.analyze(text, MONDAY).needs_llm


@pytest.mark.parametrize("kind", sorted(TEAM_TEXTS))
def test_team_text_passes_the_output_guard(output_guard, kind: str) -> None:
    text = TEAM_TEXTS[kind].format(first="Dana", brokerage="Summit Home Loans")
    assert output_guard.check(text).allowed


def test_seed_settings_drop_the_llm_key_and_keep_the_database(settings, tmp_path: Path) -> None:
    keyed = settings.model_copy(update={"openai_api_key": "sk-test"})
    chosen = seed_settings(keyed, tmp_path / "spool")
    assert not chosen.llm_enabled
    assert (chosen.database_url, chosen.run_worker, chosen.spool_dir) == (
        settings.database_url, False, tmp_path / "spool")
