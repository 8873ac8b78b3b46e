"""`textback audit export` by conversation: a scripted history driven through signed webhooks and the API, then
exported by broker, phone and lead as CSV, JSON lines and HTML, with each gate verdict and its reason."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlmodel import Session, select

from service import sender
from service.audit_conversations import COLUMNS
from service.cli import main
from service.models import Lead, OptOutEvent, OutboundMessage
from service.sending.gates import Cause, Kind, Verdict
from tests.api_helpers import TEAM_YAML, missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, CALLER, status_params

OTHER_CALLER = "+12125550142"  # Marcus's caller
NIGHT = datetime.fromisoformat("2026-06-11T05:10:00+00:00")  # 22:10 in California, outside 08:00-21:00
MORNING = datetime.fromisoformat("2026-06-11T15:05:00+00:00")  # 08:05 in California


@pytest.fixture
def brokerage() -> str:
    """Marcus's brokerage: his own, unless a test puts him in Dana's."""
    return "Harbor Mortgage Group"


@pytest.fixture
def brokers_file(tmp_path: Path, brokerage: str) -> Path:
    """The brokers file with Dana's team; Marcus's brokerage as `brokerage` says (his own by default)."""
    path = tmp_path / "brokers.yaml"
    same = '\n    company_nmls_id: "654321"' if brokerage == "Summit Home Loans" else ""  # Dana's company ID
    path.write_text(TEAM_YAML.replace("brokerage: Harbor Mortgage Group", f"brokerage: {brokerage}{same}"))
    return path


def lead_of(ctx, phone: str, broker_id: int) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == phone, Lead.broker_id == broker_id)).one()


def sid_of(ctx, template_id: str) -> str:
    with Session(ctx.engine) as session:
        sid = session.exec(select(OutboundMessage.twilio_sid).where(OutboundMessage.template_id == template_id)).one()
    assert sid
    return sid


@pytest.fixture
def story(client, post, ctx, clock) -> int:
    """A missed call at night (the opener goes: it answers the caller's call), a reply whose follow-up waits for
    the morning, a handoff, a person's text, an outcome and a STOP; Marcus has a caller of his own meanwhile."""
    clock.move_to(NIGHT)
    missed(client, post, sid="CA" + "1" * 32)  # the helper's default SID spells the numbers out
    assert post(client, "/twilio/sms/status", status_params(sid_of(ctx, "opener"), "delivered")).status_code == 200
    reply(client, post, "purchase")
    missed(client, post, caller=OTHER_CALLER, to=BROKER2, sid="CA" + "2" * 32)
    clock.move_to(MORNING)
    assert sender.send_due(ctx) == {"sent": 1}
    reply(client, post, "can I lock my rate today?")
    lead_id = lead_of(ctx, CALLER, 1)
    response = client.post(f"/api/leads/{lead_id}/messages", json={"body": "Hi, Dana here. Free at 10?"},
                           headers=signed_in(ctx))
    assert response.status_code in (200, 201), response.text
    response = client.post(f"/api/leads/{lead_id}/outcome", json={"outcome": "appointment", "note": "Friday 10am"},
                           headers=signed_in(ctx))
    assert response.status_code == 200, response.text
    reply(client, post, "STOP")
    return lead_id


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", "export", *args], env={"TEXTBACK_DATABASE_URL": database_url})


OPENER_REASON = ("answers the caller's own call (quiet hours exemption, opener_is_reply) at 22:10 "
                 "America/Los_Angeles, outside 08:00-21:00 (CA by area code)")
CALLING_HOURS = "within the recipient's calling hours (08:00-21:00, CA by area code)"
AT_SEND = "; not opted out at send time"
DANA = "Dana Whitfield (+14155550111)"

# Dana's conversation with the caller, in order: (kind, who, reason), then the summaries that matter.
HISTORY = [
    ("call", "borrower", "dial no-answer; opener queued"),
    ("text_queued", "textback", OPENER_REASON),
    ("gate_verdict", "textback", OPENER_REASON + AT_SEND),
    ("text_sent", "textback", None),
    ("delivery", "Twilio", None),
    ("inbound_text", "borrower", None),
    ("field_captured", "borrower", None),
    ("text_queued", "textback", "held by quiet hours in CA until 08:00 local (America/Los_Angeles)"),
    ("reply_decision", "textback", None),
    ("gate_verdict", "textback", CALLING_HOURS + AT_SEND),
    ("text_sent", "textback", None),
    ("inbound_text", "borrower", None),
    ("reply_decision", "textback", None),
    ("handoff", "textback", None),
    ("text_queued", "textback", CALLING_HOURS),
    ("alert", "textback", None),
    ("gate_verdict", "textback", CALLING_HOURS + AT_SEND),
    ("text_sent", "textback", None),
    ("text_queued", DANA, "a person's own text"),
    ("handoff_worked", DANA, None),
    ("bot_stopped", DANA, None),
    ("gate_verdict", "textback", "a person's own text" + AT_SEND),
    ("human_contact", DANA, None),  # when the text goes out, not when it is queued
    ("text_sent", "textback", None),
    ("outcome", DANA, "Friday 10am"),
    ("human_contact", DANA, None),
    ("inbound_text", "borrower", None),
    ("reply_decision", "textback", None),
    ("opt_out", "borrower", None),
    ("text_queued", "textback", "opt-out confirmation, allowed after an opt-out"),
    ("alert", "textback", None),
    ("reply_decision", "textback", None),
    ("gate_verdict", "textback", "opt-out confirmation, allowed after an opt-out"),
    ("text_sent", "textback", None),
]
SUMMARIES = {
    1: "forwarded to the broker: no-answer (missed)",
    3: "send-time check: allow",
    6: "purchase",
    7: "loan_type: purchase",
    9: "ask:timeline; rules fired: loan-purchase; LLM not used",
    12: "can I lock my rate today?",
    13: "handoff; rules fired: handoff-rate-lock; LLM not used",
    14: "handed to the broker: rate_lock",
    19: "Hi, Dana here. Free at 10?",
    25: "outcome: appointment",
    27: "STOP",
    28: "opt_out; rules fired: carrier-keyword:stop; LLM not used",
    29: "opted out (keyword:STOP)",
}


def export_jsonl(database_url: str, *args: str) -> list[dict[str, object]]:
    result = run(database_url, "--format", "jsonl", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def export_csv(database_url: str, *args: str) -> list[dict[str, str]]:
    result = run(database_url, *args)
    assert result.exit_code == 0, result.output
    reader = csv.DictReader(io.StringIO(result.stdout, newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def check_history(rows: list[dict[str, object]], lead_id: int) -> None:
    """Dana's conversation exactly: order, who, reasons, the summaries that matter, numbering and time order."""
    assert [(r["kind"], r["who"], r["reason"]) for r in rows] == HISTORY
    assert {seq: rows[seq - 1]["summary"] for seq in SUMMARIES} == SUMMARIES
    assert [r["seq"] for r in rows] == list(range(1, len(HISTORY) + 1))
    assert {(r["conversation"], r["broker"], r["phone"]) for r in rows} == {(lead_id, BROKER, CALLER)}
    times = [str(r["time"]) for r in rows]
    assert times == sorted(times)
    assert times[1].startswith("2026-06-11T05:10:00")  # the opener at 22:10 in California
    held = rows[7]["details"]
    assert (held["template_id"], held["verdict"], held["until"]) == ("ask_timeline", "defer",
                                                                     "2026-06-11T15:00:00.000000Z")
    assert times[9].startswith("2026-06-11T15:05:")  # sent once the window opened, at 08:05
    assert rows[1]["details"]["policy_version"] == rows[2]["details"]["policy_version"]


@pytest.mark.parametrize(
    "select_by",
    [
        pytest.param(lambda lead: ["--phone", "(415) 555-0199"], id="phone"),
        pytest.param(lambda lead: ["--phone", "+1 415.555.0199", "--since", "2026-06-11"], id="phone-since"),
        pytest.param(lambda lead: ["--lead", str(lead)], id="lead"),
        pytest.param(lambda lead: ["--broker", BROKER, "--since", "2026-06-01"], id="broker"),
        pytest.param(lambda lead: ["--broker", BROKER, "--phone", CALLER], id="broker-and-phone"),
    ],
)
def test_export_conversation_in_order_with_gate_reasons(story: int, ctx, select_by) -> None:
    url = ctx.settings.database_url
    rows = export_jsonl(url, *select_by(story))
    check_history(rows, story)
    as_csv = export_csv(url, *select_by(story))
    assert [(r["kind"], r["who"], r["reason"] or None) for r in as_csv] == HISTORY
    assert [json.loads(r["details"]) for r in as_csv] == [r["details"] for r in rows]
    assert [r["time"] for r in as_csv] == [r["time"] for r in rows]
    result = run(url, "--format", "html", *select_by(story))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("<section") == 1
    assert "Marcus" not in result.stdout
    assert OPENER_REASON.replace("'", "&#x27;") in result.stdout


def test_export_keeps_a_second_brokers_conversation_apart(story: int, ctx) -> None:
    url = ctx.settings.database_url
    dana = run(url, "--broker", BROKER, "--since", "2026-06-01", "--format", "jsonl").stdout
    assert OTHER_CALLER not in dana
    # Not even the last four digits (as a masked number shows them); digits inside a timestamp's fraction of a
    # second are not a number.
    assert re.search(rf"(?<!\d){OTHER_CALLER[-4:]}(?!\d)", dana) is None
    assert OTHER_CALLER[2:] not in dana  # nor the national number
    marcus = export_jsonl(url, "--broker", BROKER2, "--since", "2026-06-01")
    assert {(r["broker"], r["phone"]) for r in marcus} == {(BROKER2, OTHER_CALLER)}
    assert [r["kind"] for r in marcus] == ["call", "text_queued", "gate_verdict", "text_sent"]
    assert CALLER not in json.dumps(marcus)
    both = export_jsonl(url, "--broker", BROKER, "--broker", BROKER2, "--since", "2026-06-01")
    assert [r["conversation"] for r in both] == [story] * len(HISTORY) + [marcus[0]["conversation"]] * 4
    assert export_jsonl(url, "--broker", BROKER2, "--phone", CALLER) == []


def test_export_masks_borrower_numbers_in_every_format(story: int, ctx) -> None:
    for fmt in ("csv", "jsonl", "html"):
        result = run(ctx.settings.database_url, "--lead", str(story), "--format", fmt, "--mask-phones")
        assert result.exit_code == 0, result.output
        for raw in (CALLER, CALLER[1:], "4155550199"):
            assert raw not in result.stdout, (fmt, raw)
        assert "+1******0199" in result.stdout
        assert BROKER in result.stdout  # the broker's own numbers stay readable


def test_export_says_not_recorded_for_texts_from_before_verdicts(story: int, ctx) -> None:
    with Session(ctx.engine) as session:
        opener = session.exec(select(OutboundMessage).where(OutboundMessage.template_id == "opener")).one()
        opener.verdicts = None
        session.add(opener)
        session.commit()
    rows = export_jsonl(ctx.settings.database_url, "--lead", str(story))
    assert [(r["kind"], r["reason"]) for r in rows[:4]] == [
        ("call", "dial no-answer; opener queued"), ("text_queued", "not recorded"), ("text_sent", None),
        ("delivery", None)]


def test_export_only_events_in_the_window(story: int, ctx) -> None:
    rows = export_jsonl(ctx.settings.database_url, "--phone", CALLER, "--since", "2026-06-11T15:00:00Z")
    assert [r["kind"] for r in rows] == [k for k, _, _ in HISTORY[9:]]
    assert [r["seq"] for r in rows] == list(range(1, len(HISTORY) - 8))
    night = export_jsonl(ctx.settings.database_url, "--broker", BROKER, "--since", "2026-06-11",
                         "--until", "2026-06-11T06:00:00Z")
    assert [r["kind"] for r in night] == [k for k, _, _ in HISTORY[:9]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "+14155550177", "--since", "2026-06-01"], "no broker has the Twilio number +14155550177"),
        (["--phone", "12"], "'12' is not a valid phone number"),
        (["--phone", "call me"], "'call me' is not a phone number"),
        (["--broker", BROKER], "Missing option '--since'"),
        (["--lead", "0"], "Invalid value for '--lead'"),
        (["--layout", "flat", "--since", "2026-06-01", "--phone", CALLER], "--layout flat is the earlier table"),
        (["--layout", "flat", "--since", "2026-06-01", "--format", "html"], "--layout flat is the earlier table"),
    ],
)
def test_refuse_export_with_unknown_broker_or_bad_phone(database_url: str, ctx, args, message) -> None:
    result = run(database_url, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.stdout.count("conversation,seq") == 0  # nothing written before the error


FITS = """
() => ({
  doc: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
  tables: Array.from(document.querySelectorAll('table')).map(t => [t.scrollWidth, t.parentElement.clientWidth]),
  cells: Array.from(document.querySelectorAll('td')).filter(td => td.scrollWidth > td.clientWidth + 1).length,
})
"""


def fits(page) -> None:
    """Nothing wider than the page: no horizontal scroll, no table or cell running off its box."""
    shape = page.evaluate(FITS)
    assert shape["doc"][0] <= shape["doc"][1], shape
    assert all(wide <= room for wide, room in shape["tables"]), shape
    assert shape["cells"] == 0, shape


def test_open_html_export_in_a_browser_renders_each_timeline_within_the_page(story: int, ctx, tmp_path) -> None:
    """Debian's Chromium opens the standalone file: one section per conversation with its header and timeline,
    the allow reason in it, no horizontal overflow on a phone, a desktop or an A4 page when printed."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, PHONE_VIEWPORT, PageWatch, check_page, require_chromium

    require_chromium()
    target = tmp_path / "audit.html"
    result = run(ctx.settings.database_url, "--broker", BROKER, "--broker", BROKER2, "--since", "2026-06-01",
                 "--format", "html", "--mask-phones", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "in 2 conversation(s)" in result.stderr
    page_text = target.read_text()
    assert "http" not in page_text.split("<main>")[0]  # no external resource in the head
    assert f"selection: broker {BROKER}; broker {BROKER2}; since 2026-06-01T00:00:00.000000Z." in page_text
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        watch = PageWatch()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch.attach(page)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(target.as_uri())
        check_page(page)
        sections = page.locator("section.conversation")
        assert sections.count() == 2
        dana = sections.nth(0)
        assert dana.locator("h2").inner_text() == f"Conversation {story}: +1******0199 with Dana Whitfield"
        header = dana.locator("dl").inner_text()
        assert f"Dana Whitfield, Summit Home Loans (NMLS 123456), {BROKER}" in header
        assert "appointment: Friday 10am" in header
        assert "2026-06-10 22:10:00 PDT" in header  # the first event, in the broker's time
        assert dana.locator("tbody tr").count() == len(HISTORY)
        second = dana.locator("tbody tr").nth(1).locator("td")
        assert [second.nth(i).inner_text() for i in (0, 2, 5)] == ["2", "text queued", OPENER_REASON]
        assert sections.nth(1).locator("h2").inner_text().endswith("+1******0142 with Marcus Chen")
        fits(page)
        page.screenshot(path=str(tmp_path / "audit-desktop.png"), full_page=True)
        page.set_viewport_size(PHONE_VIEWPORT)
        fits(page)
        page.emulate_media(media="print")
        page.set_viewport_size({"width": 718, "height": 1047})  # A4 inside 12 mm margins at 96 dpi
        fits(page)
        assert page.pdf(format="A4").startswith(b"%PDF")
        page.screenshot(path=str(tmp_path / "audit-print.png"), full_page=True)
        browser.close()
    assert requests == [target.as_uri()]
    assert watch.errors == []


def test_record_verdicts_without_a_statement_of_their_own(client, post, ctx, monkeypatch) -> None:
    """A missed call (queueing and sending the opener) runs the same number of SQL statements whether the
    verdicts are recorded or not: they ride in the row's own INSERT and UPDATE."""
    from sqlalchemy import event

    from service.sending import verdicts

    def statements(caller: str) -> int:
        seen: list[str] = []

        def count(_conn, _cursor, statement, *_args) -> None:
            seen.append(statement)

        event.listen(ctx.engine, "before_cursor_execute", count)
        try:
            missed(client, post, caller=caller, sid="CA" + caller[-4:] * 8)
        finally:
            event.remove(ctx.engine, "before_cursor_execute", count)
        return len(seen)

    statements("+14155550101")  # the first request warms what a process does once
    recorded = statements("+14155550102")
    monkeypatch.setattr(verdicts, "record", lambda *_args, **_kwargs: None)
    unrecorded = statements("+14155550103")
    assert recorded == unrecorded
    with Session(ctx.engine) as session:
        rows = {m.to_phone: m.verdicts for m in session.exec(select(OutboundMessage))}
    assert [v["stage"] for v in rows["+14155550102"]] == ["queue", "send"]
    assert rows["+14155550103"] is None


@pytest.mark.parametrize(
    ("verdict", "stage", "purpose", "reason"),
    [
        (Verdict(Kind.allow, reason="a person's own text"), "queue", "human", "a person's own text"),
        (Verdict(Kind.allow, reason="a person's own text"), "send", "human",
         "a person's own text; not opted out at send time"),
        (Verdict(Kind.allow, reason="opt-out confirmation, allowed after an opt-out"), "send", "optout_confirm",
         "opt-out confirmation, allowed after an opt-out"),
        (Verdict.defer(Cause.quiet_hours, "quiet hours in FL until 08:00 local (America/New_York)", NIGHT),
         "queue", "question", "held by quiet hours in FL until 08:00 local (America/New_York)"),
        (Verdict.defer(Cause.lock_busy, "opt-out lock busy", NIGHT), "send", "question",
         "held: opt-out lock busy"),
        (Verdict.suppress(Cause.opted_out, "opted out"), "queue", "opener",
         "suppressed: opted out (policy set 0123456789ab)"),
        (Verdict.suppress(Cause.cap, "per-lead daily cap reached"), "queue", "question",
         "suppressed: per-lead daily cap reached (policy set 0123456789ab)"),
        (Verdict.block(Cause.output_guard, "output guard: no-rate-quotes"), "queue", "opener",
         "blocked by the output guard: no-rate-quotes (policy set 0123456789ab)"),
    ],
)
def test_reason_of_each_verdict_reads_as_a_sentence(verdict, stage: str, purpose: str, reason: str) -> None:
    from service.sending.verdicts import reason_of

    assert reason_of(verdict, stage=stage, purpose=purpose, policy_version="0123456789ab") == reason


def test_export_suppressed_follow_up_with_the_policy_set_after_stop(story: int, ctx) -> None:
    """A follow-up queued after the STOP is stopped by the opt-out gate; the export says so with the policy set."""
    from service import outbox

    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.get(Lead, story)
        queued = outbox.queue_text(session, ctx, broker=ctx.broker_for(BROKER), lead=lead, to=CALLER,
                                   template_id="ask_timeline", purpose="question")
        session.commit()
    assert queued is not None
    assert queued.msg.status == "suppressed"
    rows = export_jsonl(ctx.settings.database_url, "--lead", str(story))
    assert [(r["kind"], r["reason"]) for r in rows[len(HISTORY):]] == [
        ("text_queued", "suppressed: opted out (brokerage scope: STOP to Dana Whitfield of Summit Home Loans at "
                        f"+1********00 on 2026-06-11) (policy set {ctx.guard.policy_version})"),
    ]
    assert rows[-1]["details"]["verdict"] == "suppress"
    assert rows[-1]["details"]["cause"] == "opted_out"


@pytest.mark.parametrize(
    ("brokerage", "shown"),
    [("Summit Home Loans", True), ("Harbor Mortgage Group", False)],
    ids=["same-brokerage", "other-brokerage"],
)
def test_export_opt_out_recorded_with_another_broker_when_it_applies(
    client, post, ctx, brokers_file: Path, brokerage: str, shown: bool
) -> None:
    """A STOP the caller sent to Marcus's number is in the caller's conversation with Dana when both brokers
    belong to one brokerage (the default opt-out scope), saying where it was recorded; not otherwise."""
    missed(client, post, sid="CA" + "1" * 32)
    reply(client, post, "STOP", to=BROKER2)
    lead_id = lead_of(ctx, CALLER, 1)
    rows = export_jsonl(ctx.settings.database_url, "--lead", str(lead_id))
    opt_outs = [(r["kind"], r["summary"], r["reason"], r["details"].get("recorded_with")) for r in rows
                if r["kind"] == "opt_out"]
    expected = ("opt_out", "opted out (keyword:STOP)",
                "recorded with Marcus Chen (+12125550100), same brokerage (Summit Home Loans)", BROKER2)
    assert opt_outs == ([expected] if shown else [])
    assert {r["conversation"] for r in rows} == {lead_id}
    assert "inbound_text" not in {r["kind"] for r in rows}  # the STOP itself belongs to Marcus's records



@pytest.mark.parametrize("brokerage", ["Summit Home Loans"])
@pytest.mark.parametrize(
    ("source", "scope", "shown"),
    [("keyword:STOP", None, True), ("keyword:STOP", "broker", True), ("error:21610", "brokerage", False)],
    ids=["old-row-no-scope", "recorded-as-broker", "carrier-block"],
)
def test_export_other_brokers_opt_out_by_the_scope_in_force(
    client, post, ctx, brokers_file: Path, brokerage: str, source: str, scope: str | None, shown: bool
) -> None:
    """Another broker's opt-out belongs to a conversation as the gates decide it: by the scope in force now
    (brokerage), whatever scope the row recorded (none, on rows from before scopes); never a carrier block,
    which stays on the number it was sent from."""
    missed(client, post, sid="CA" + "1" * 32)
    lead_id = lead_of(ctx, CALLER, 1)
    marcus = ctx.broker_for(BROKER2)
    with Session(ctx.engine) as session:
        session.add(OptOutEvent(broker_id=marcus.id, phone=CALLER, action="opt_out", source=source, scope=scope))
        session.commit()
    rows = export_jsonl(ctx.settings.database_url, "--lead", str(lead_id))
    opt_outs = [(r["summary"], r["reason"]) for r in rows if r["kind"] == "opt_out"]
    expected = (f"opted out ({source})", "recorded with Marcus Chen (+12125550100), same brokerage (Summit Home Loans)")
    assert opt_outs == ([expected] if shown else [])


def test_export_voicemail_and_its_alert_in_the_conversation(client, post, ctx) -> None:
    from tests.test_voicemail import RECORDING_SID, RECORDING_URL, transcription, voicemail

    missed(client, post, sid="CA" + "1" * 32)
    assert post(client, "/twilio/voice/voicemail", voicemail("23")).status_code == 200
    assert post(client, "/twilio/voice/transcription", transcription()).status_code == 200
    rows = export_jsonl(ctx.settings.database_url, "--phone", CALLER)
    mail = [(r["kind"], r["summary"], r["reason"]) for r in rows if r["kind"] == "voicemail"]
    assert mail == [("voicemail", "voicemail (23 s)", None),
                    ("voicemail", "voicemail transcription: completed", RECORDING_SID)]
    assert next(r for r in rows if r["kind"] == "voicemail")["details"]["recording"].startswith(RECORDING_URL)
    assert [r["details"]["template_id"] for r in rows if r["kind"] == "alert"][-2:] == [
        "alert_voicemail", "alert_voicemail_transcript"]


def test_export_texts_withdrawn_while_they_waited(client, post, ctx, clock) -> None:
    """At night the follow-ups wait; a newer reply withdraws the first, a person's text the second (and waits
    itself): the export says which, when and why, from the UPDATE that withdrew them."""
    clock.move_to(NIGHT)
    missed(client, post, sid="CA" + "1" * 32)
    reply(client, post, "purchase")
    reply(client, post, "in about 3 months")
    lead_id = lead_of(ctx, CALLER, 1)
    response = client.post(f"/api/leads/{lead_id}/messages", json={"body": "Hi, Dana here. Free at 10?"},
                           headers=signed_in(ctx))
    assert response.status_code in (200, 201), response.text
    rows = export_jsonl(ctx.settings.database_url, "--lead", str(lead_id))
    texts = [(r["kind"], r["details"].get("template_id"), r["summary"] if r["kind"] == "gate_verdict" else None,
              r["reason"]) for r in rows if r["kind"] in {"text_queued", "gate_verdict"}]
    held = "held by quiet hours in CA until 08:00 local (America/Los_Angeles)"
    assert texts == [
        ("text_queued", "opener", None, OPENER_REASON),
        ("gate_verdict", None, "send-time check: allow", OPENER_REASON + AT_SEND),
        ("text_queued", "ask_timeline", None, held),
        ("gate_verdict", None, "withdrawn before sending", "not sent: superseded by a newer reply"),
        ("text_queued", "ask_applied_elsewhere", None, held),
        ("text_queued", "human", None, held),
        ("gate_verdict", None, "withdrawn before sending", "not sent: canceled: a person took over"),
    ]
    withdrawn = [r for r in rows if r["summary"] == "withdrawn before sending"]
    records = {r["record"]: r["details"].get("template_id") for r in rows if r["kind"] == "text_queued"}
    assert [records[r["record"]] for r in withdrawn] == ["ask_timeline", "ask_applied_elsewhere"]
    assert {(r["details"]["stage"], r["details"]["verdict"]) for r in withdrawn} == {("waiting", "suppress")}


def test_order_events_at_one_instant_by_kind_then_record_number() -> None:
    from service.audit_conversations import _order

    at = NIGHT
    events = [{"time": at, "kind": "outcome", "record": "lead_event:10"},
              {"time": at, "kind": "gate_verdict", "record": "outbound:3"},
              {"time": at, "kind": "human_contact", "record": "lead_event:9"},
              {"time": at, "kind": "text_queued", "record": "outbound:3"},
              {"time": at, "kind": "inbound_text", "record": "inbound:2"}]
    assert [e["record"] + "/" + e["kind"] for e in sorted(events, key=_order)] == [
        "inbound:2/inbound_text", "lead_event:9/human_contact", "lead_event:10/outcome", "outbound:3/text_queued",
        "outbound:3/gate_verdict"]
