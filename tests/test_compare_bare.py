"""benchmarks/compare_bare.py's baseline does the real work (a signed form stores one row and gets TwiML, a forged
one is refused and stores nothing) and its table divides textback by bare. No timing is asserted."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import pytest
from litestar.testing import TestClient
from sqlmodel import Session, select
from twilio.request_validator import RequestValidator

from benchmarks import compare_bare
from benchmarks.bare_app import PATH, BareCall, BareConfig, BareModel, bare_engine, create_app
from service.twilio import fake
from service.twilio.signature import sign

TOKEN = "bare-test-token"
PUBLIC = "https://bare.example.com"


def _form(n: int) -> dict[str, str]:
    return fake.dial_status_form(f"CA{n:032x}", f"+1415555{n:04d}", "+14155550100", "no-answer")


@pytest.fixture
def bare(database_url):
    """The bare app on a fresh database (its own table: dropped before and after, as conftest drops textback's)."""
    engine = bare_engine(database_url)
    BareModel.metadata.drop_all(engine)
    app = create_app(BareConfig(database_url=database_url, auth_token=TOKEN, public_url=PUBLIC))
    with TestClient(app) as client:
        yield client, app.state.engine
    BareModel.metadata.drop_all(engine)
    engine.dispose()


def _rows(engine) -> list[BareCall]:
    with Session(engine) as session:
        return list(session.exec(select(BareCall)).all())


def test_post_bare_app_signed_form_stores_one_row_and_answers_twiml(bare):
    client, engine = bare
    form = _form(1)
    response = client.post(PATH, data=form,
                           headers={"X-Twilio-Signature": sign(token=TOKEN, url=PUBLIC + PATH, params=form)})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert ElementTree.fromstring(response.text).tag == "Response"
    rows = _rows(engine)
    assert [(r.call_sid, r.caller, r.called, r.dial_status) for r in rows] == [
        (form["CallSid"], form["From"], form["To"], "no-answer")]


@pytest.mark.parametrize("signature", [
    pytest.param(lambda form: sign(token="another-token", url=PUBLIC + PATH, params=form), id="wrong-token"),
    pytest.param(lambda form: sign(token=TOKEN, url="https://other.example.com" + PATH, params=form), id="wrong-url"),
    pytest.param(lambda form: sign(token=TOKEN, url=PUBLIC + PATH, params={**form, "From": "+14155559999"}),
                 id="other-form"),
    pytest.param(lambda form: "", id="missing"),
])
def test_post_bare_app_wrong_signature_refused_and_stores_nothing(bare, signature):
    client, engine = bare
    form = _form(2)
    response = client.post(PATH, data=form, headers={"X-Twilio-Signature": signature(form)})
    assert response.status_code == 403
    assert _rows(engine) == []


def test_form_maker_makes_distinct_calls_signed_for_the_public_url():
    maker = compare_bare.FormMaker()
    forms = maker.make(50) + maker.make(50)
    params = [dict(parse_qsl(f.body, keep_blank_values=True)) for f in forms]
    assert len({p["CallSid"] for p in params}) == len({p["From"] for p in params}) == 100
    assert {p["DialCallStatus"] for p in params} == {"no-answer"}
    validator = RequestValidator(compare_bare.AUTH_TOKEN)
    assert all(validator.validate(compare_bare.PUBLIC_URL + PATH, p, f.signature)
               for p, f in zip(params, forms, strict=True))


@pytest.mark.parametrize(("textback", "bare_value", "expected"), [
    (30.0, 600.0, 0.05),
    (15.0, 1.0, 15.0),
    (2.0, 2.0, 1.0),
    (1.0, 0.0, math.nan),
    (math.nan, 1.0, math.nan),
    (1.0, math.nan, math.nan),
])
def test_ratio_divides_textback_by_bare(textback, bare_value, expected):
    got = compare_bare.ratio(textback, bare_value)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def _window(server, *, ok, seconds, p50, p99, cpu, stored, connections=8, round_=1):
    load = compare_bare.LoadResult(sent=ok, ok=ok, seconds=seconds, p50_ms=p50, p99_ms=p99)
    return compare_bare.Window(setup="SQLite 1p", server=server, connections=connections, round=round_, load=load,
                               cpu_seconds=cpu, stored=stored, sends=0, drain_seconds=0.0)


def test_summarize_rounds_mean_rates_and_cpu_over_all_stored():
    summary = compare_bare.summarize([
        _window("bare", ok=1000, seconds=10, p50=2.0, p99=10.0, cpu=1.0, stored=1000),
        _window("bare", ok=600, seconds=10, p50=4.0, p99=30.0, cpu=2.0, stored=500, round_=2),
    ])
    assert summary.rate == pytest.approx(80.0)  # mean of 100 and 60 requests/s
    assert (summary.p50_ms, summary.p99_ms) == (pytest.approx(3.0), pytest.approx(20.0))
    assert summary.cpu_ms == pytest.approx(2.0)  # 3 s of CPU over 1,500 stored calls
    assert summary.rounds == 2


def test_table_rows_show_both_figures_and_textback_over_bare():
    windows = [
        _window("bare", ok=5000, seconds=10, p50=2.0, p99=8.0, cpu=5.0, stored=5000),
        _window("textback", ok=400, seconds=10, p50=20.0, p99=200.0, cpu=6.0, stored=400),
    ]
    rows = compare_bare.table_rows(compare_bare.summaries_of(windows))
    assert rows == [["SQLite 1p", "8", "500", "40", "0.08", "2.0", "20.0", "10.00", "8.0", "200.0", "25.00",
                     "1.00", "15.00", "15.00"]]
    table = compare_bare.format_table(rows).splitlines()
    assert len(table) == 3
    assert [c.strip() for c in table[0].strip("|").split("|")] == list(compare_bare.COLUMNS)
    assert [c.strip() for c in table[2].strip("|").split("|")] == rows[0]


def test_table_rows_without_a_baseline_show_a_dash_not_a_ratio():
    windows = [_window("textback", ok=400, seconds=10, p50=20.0, p99=200.0, cpu=6.0, stored=400)]
    row = compare_bare.table_rows(compare_bare.summaries_of(windows))[0]
    assert row[2:5] == ["-", "40", "-"]


def test_turn_ms_divides_write_turn_held_by_stored_calls():
    window = _window("textback", ok=400, seconds=10, p50=20.0, p99=200.0, cpu=6.0, stored=400)
    assert math.isnan(window.turn_ms)  # PostgreSQL, or bare: no write turn
    window.turn_held_seconds, window.turns = 2.0, 1200
    assert window.turn_ms == pytest.approx(5.0)  # 2 s held over 400 calls: at most 200 calls/s
    window.stored = 0
    assert math.isnan(window.turn_ms)
