"""The output guard itself: lazy import, offline, required values, fail-closed, threads and async."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.policy.files import load_outbound_rules, policy_version
from service.policy.guard import VALIDATOR_NAME, OutputGuard
from service.policy.normalize import normalize
from service.policy.verdicts import Violation, scan

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
REQUIRED = {"brokerage": "Harbor Home Loans", "nmls_id": "1234567"}
OPENER = "Hi, this is Dana with Harbor Home Loans (NMLS #1234567). Sorry I missed your call! Reply STOP to opt out."


@pytest.fixture(scope="session")
def guard() -> OutputGuard:
    """The real output guard over the repository's policies, built once."""
    return OutputGuard.load(POLICIES)


def _run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}  # a fresh HOME: no ~/.guardrailsrc
    env.pop("GUARDRAILS_RUN_SYNC", None)
    return subprocess.run(  # our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_import_guard_module_without_guardrails(tmp_path: Path) -> None:
    proc = _run_python(
        """
        import sys
        import service.policy.guard, service.policy.files, service.policy.report, service.policy.cli
        print(sorted(m for m in sys.modules if m == "guardrails" or m.startswith("guardrails.")))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_load_guard_without_building_iri_grammar(tmp_path: Path) -> None:
    """Loading the guard leaves out jsonschema's IRI grammar (1.5 s of start-up), and the guard still blocks a
    rate quote and allows the opener."""
    proc = _run_python(
        f"""
        import sys
        from pathlib import Path
        from service.policy.guard import OutputGuard
        guard = OutputGuard.load(Path({str(POLICIES)!r}))
        print(sys.modules.get("rfc3987_syntax", "absent"), "jsonschema" in sys.modules)
        print(guard.check("Rates start at 6.25% APR this week").allowed, guard.check({OPENER!r}, required={REQUIRED!r}).allowed)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "True", "False", "True"]


def test_check_text_allowed_with_required_values(guard: OutputGuard) -> None:
    result = guard.check(OPENER, required=REQUIRED)
    assert result.allowed
    assert result.violations == []
    assert result.policy_version == policy_version(POLICIES)


def test_check_text_required_value_case_insensitive(guard: OutputGuard) -> None:
    assert guard.check(OPENER.upper(), required=REQUIRED).allowed


def test_block_text_missing_required_values(guard: OutputGuard) -> None:
    result = guard.check("Sorry I missed your call! Reply STOP to opt out.", required=REQUIRED)
    assert not result.allowed
    assert result.violations == [
        Violation("required-brokerage", "Harbor Home Loans"),
        Violation("required-nmls_id", "1234567"),
    ]


HELP = "Harbor Home Loans (NMLS #1234567): texts from Dana. Reply here or call +13035550142. Reply STOP to opt out."


@pytest.mark.parametrize(
    ("template", "text", "missing"),
    [
        ("opener", OPENER.replace(" Reply STOP to opt out.", ""), ["required-opt_out"]),
        ("opener", OPENER.replace("Reply STOP to opt out.", "Reply STOP to stop the music."), ["required-opt_out"]),
        ("opener", OPENER.replace("(NMLS #1234567)", "(NMLS #7654321)"), ["required-nmls_id"]),
        ("opener", OPENER.replace("(NMLS #1234567)", "(call 1234567)"), ["required-nmls_id"]),
        ("opener_booking", OPENER.replace(" with Harbor Home Loans", ""), ["required-brokerage"]),
        ("help", HELP.replace(" Reply here or call +13035550142.", ""), ["required-help_contact"]),
        ("help", HELP.replace(" (NMLS #1234567)", ""), ["required-nmls_id"]),
        ("opener", OPENER, []),
        ("opener", OPENER.replace("Reply STOP to opt out.", "To opt out, reply STOP."), []),
        ("help", HELP, []),
        ("help", HELP.replace("Reply here or call +13035550142.", "Call us at (303) 555-0142."), []),
        ("ready", "Thank you! Dana will call you shortly.", []),
    ],
)
def test_check_text_required_content_by_template_kind(
    guard: OutputGuard, template: str, text: str, missing: list[str]
) -> None:
    """Required by code for the kind, whatever `required` the caller passes (here only the identity values)."""
    result = guard.check(text, required={"nmls_id": "1234567", "brokerage": "Harbor Home Loans"} if template != "ready"
                         else {}, template=template)
    assert sorted({v.rule for v in result.violations}) == missing
    assert result.allowed is (not missing)


def test_block_opener_kind_without_identity_values(guard: OutputGuard) -> None:
    """No values passed: the NMLS ID and brokerage cannot be shown to be present, so the opener is held."""
    result = guard.check(OPENER, template="opener")
    assert not result.allowed
    assert sorted(result.violations, key=lambda v: v.rule) == [
        Violation("required-brokerage", "brokerage (no value given to check the text against)"),
        Violation("required-nmls_id", "NMLS ID (no value given to check the text against)"),
    ]


URL_FIGURES = [
    "https://book.example.com/?promo=5.99%25APR",
    "https://book.example.com/?rate%3D6.5",
    "https://book.example.com/?promo=6%25APR",
    "https://book.example.com/?promo=6%2525APR",
    "https://book.example.com/promo/6%25-apr",
    "https://book.example.com/?x=%36%2E%35%25",
    "https://book.example.com/?p=%24500%20credit",
    "https://book.example.com/?p=3%25%20down",
    "https://book.example.com/?offer=no+closing+costs",
    "https://book.example.com/low-rates",
    "https://book.example.com/zero-down-homes",
]
URL_PLAIN = [
    "https://calendly.com/dana-harbor/15min?utm_source=sms%20text",
    "https://cal.example.com/d/abc123/30-minute-call",
    "https://calendly.com/dana/15min?month=2026-03&date=2026-03-14",
    "https://book.example.com/dana%20whitfield",
    "https://harborhomeloans.example/contact?ref=sms",
]


@pytest.mark.parametrize("url", URL_FIGURES)
def test_block_booking_link_figure_url_encoded(guard: OutputGuard, url: str) -> None:
    """A broker value is checked as rendered, and decoded: an escaped figure in a link is still a figure."""
    result = guard.check(f"Pick a time to talk here: {url} or just reply to this text.")
    assert not result.allowed, normalize(url)


@pytest.mark.parametrize("url", URL_PLAIN)
def test_check_booking_link_plain_url_allowed(guard: OutputGuard, url: str) -> None:
    assert guard.check(f"Pick a time to talk here: {url} or just reply to this text.").allowed, normalize(url)


def test_block_text_every_violation_reported(guard: OutputGuard) -> None:
    result = guard.check("Rates from 5.9%, $1,850/mo, 3% down!", required={"nmls_id": "1234567"})
    rules = {v.rule for v in result.violations}
    assert not result.allowed
    assert {"no-rate-quotes", "no-payment-amounts", "no-down-payment-terms", "required-nmls_id"} <= rules
    assert Violation("no-rate-quotes", "Rates from 5.9%") in result.violations


def test_check_text_never_fixed(guard: OutputGuard) -> None:
    fresh = OutputGuard(guard._guard, guard.rules, guard.policy_version)  # no remembered verdict: guardrails runs
    fresh.check("Rates from 5.9%")
    call = guard._guard.history.last  # the Guard's own record of the call
    assert call.guarded_output is None  # refrained, not rewritten
    assert call.status == "fail"


def test_scan_text_matches_guard(guard: OutputGuard) -> None:
    rules = [loaded.rule for loaded in load_outbound_rules(POLICIES)]
    for text in ["Rates from 5.9%, $1,850/mo", OPENER, "Lock in today's rate"]:
        assert scan(text, rules) == guard.check(text).violations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s1x percent", "six percent"),
        ("F0UR pct", "four pct"),
        ("n0 closing c0sts", "no closing costs"),
        ("6ix and tw3nty-f1ve", "six and 25"),  # a compound spelled-out number is read as digits
        ("twenty-one hundred a month", "2,100 a month"),
        ("six point two five", "6.25"),
        ("six.five", "6.5"),
        ("5\u00bd % or 6\u215b or 5\u00b9\u2044\u2082", "5 1/2 % or 6 1/8 or 5 1/2"),  # fractions never fuse with a digit
        ("\u0666\u066a and 6\u066b5\u2030", "6% and 6.5%"),  # Arabic percent and decimal sign, per mille
        ("5.O% 6.S 5.9O 5.l%", "5.0% 6.5 5.90 5.1%"),  # letters standing in for digits inside a figure
        ("s!x", "six"),
        ("Mail \u2105 Dana", "Mail c/o Dana"),  # "care of" is not a percent sign
        ("9\ufe0f\u20e3%", "9%"),  # keycap: variation selector and enclosing keycap dropped
        ("\u2779 and \u0665", "4 and 5"),  # dingbat and Arabic-Indic digits
        ("\U0001f51f", "10"),  # keycap ten
        ("s i x", "six"),
        ("r.a.t.e", "rate"),
        ("5\u0336.99", "5.99"),  # a combining strike-through over a digit
        ("https://x.example/?q=s1x%2525", "https://x.example q six%"),  # a link read as its reader sees it
    ],
)
def test_normalize_disguised_numbers(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "your 401k, the 3rd, at 5pm, NMLS123456, W-2s, 1099s",
        "Reply 1 2 or 3",  # spaced digits without a letter stay apart
        "T-Mobile, e-mail, a.m., U.S.",
        "Apt 6B, No.5, six people, at five fifteen",  # lone number words stay words
        "años, café, Ñandú",  # accented letters survive NFKC and the mark removal
    ],
)
def test_normalize_leaves_plain_tokens(text: str) -> None:
    assert normalize(text) == text


class _StubGuard:
    """Stands in for the guardrails Guard to show how `check` treats what it returns."""

    def __init__(self, outcome: object = None) -> None:
        self.outcome = outcome

    def validate(self, text: str, **_kwargs: object) -> object:
        if self.outcome is None:
            raise RuntimeError("boom")
        return self.outcome


def test_check_text_fails_closed_on_guard_error(guard: OutputGuard) -> None:
    stubbed = OutputGuard(_StubGuard(), guard.rules, guard.policy_version)
    result = stubbed.check(OPENER)
    assert not result.allowed
    assert result.violations == [Violation("guard-error", "RuntimeError")]


def test_check_text_blocked_when_guard_rewrites_it(guard: OutputGuard) -> None:
    from types import SimpleNamespace

    rewritten = SimpleNamespace(validation_passed=True, validated_output="something else", validation_summaries=[], error=None)
    result = OutputGuard(_StubGuard(rewritten), guard.rules, guard.policy_version).check(OPENER)
    assert not result.allowed
    assert result.violations[0].rule == "guard-error"


def test_refuse_guard_validator_not_registered(guard: OutputGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    from guardrails.validator_base import validators_registry

    monkeypatch.delitem(validators_registry, VALIDATOR_NAME)
    with pytest.raises(PolicyError, match="not registered"):
        OutputGuard.load(POLICIES)


def test_refuse_guard_rule_that_lets_its_example_through(tmp_path: Path) -> None:
    (tmp_path / "policies" / "outbound").mkdir(parents=True)
    (tmp_path / "policies" / "outbound" / "weak.yaml").write_text(
        textwrap.dedent(
            """\
            id: weak-rule
            kind: outbound_rule
            title: A rule whose examples disagree with it
            rationale: 12 CFR 1026.24(c), for the test.
            severity: block
            patterns: ['\\bzzz\\b']
            examples:
              must_match: ["Rates from 5.9%"]
              must_not_match: ["hello"]
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / "policies" / "outbound" / "required.yaml").write_text(
        textwrap.dedent(
            """\
            id: required-outbound-rules
            kind: outbound_manifest
            title: The one rule this test needs
            rationale: The compliance manifest, for the test.
            owner: compliance
            required:
              - {id: weak-rule, min_severity: block, must_match: ["zzz"]}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(PolicyError, match=re.escape('must_match example "Rates from 5.9%" passed')) as info:
        OutputGuard.load(tmp_path / "policies")
    assert (info.value.path, info.value.field) == ("policies/outbound/weak.yaml", "examples.must_match[0]")


def test_check_text_same_result_across_threads(guard: OutputGuard) -> None:
    texts = [OPENER, "Rates from 5.9%", "Zero down!", "See you at 3 PM", "Lock in today's rate"] * 40
    expected = [guard.check(t) for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(guard.check, texts))
    assert got == expected


def test_check_text_inside_running_event_loop(guard: OutputGuard) -> None:
    async def handler() -> bool:
        return guard.check("Rates from 5.9%").allowed  # sync check inside an async handler: no warning

    assert asyncio.run(handler()) is False


def test_build_guard_without_network(outbound_attempts, tmp_path: Path) -> None:
    fresh = OutputGuard.load(POLICIES)
    for text in [OPENER, "Rates from 5.9%", "Zero down!"] * 5:
        fresh.check(text, required=REQUIRED)
    assert outbound_attempts() == []


SUBPROCESS_NO_NETWORK = """
    import atexit, json, socket, sys, time
    attempts = []
    def refuse(kind):
        def inner(*args, **kwargs):
            attempts.append(f"{kind} {args!r}"[:200])
            raise OSError("network blocked in test")
        return inner
    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect_ex")
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.create_connection = refuse("create_connection")
    # registered first, so it runs last: after guardrails' and OpenTelemetry's own exit handlers have flushed
    atexit.register(lambda: print(json.dumps({"attempts_at_exit": attempts}), flush=True))

    from pathlib import Path
    from service.policy.guard import OutputGuard
    guard = OutputGuard.load(Path("policies"))
    verdicts = [guard.check(t).allowed for t in ["Rates from 5.9%", "See you at 3 PM"] * 10]
    print(json.dumps({"attempts": list(attempts), "verdicts": verdicts[:2], "done": time.time()}), flush=True)
"""


@pytest.mark.slow
def test_build_guard_in_subprocess_without_network_or_exit_hang(tmp_path: Path) -> None:
    proc = _run_python(SUBPROCESS_NO_NETWORK, tmp_path)
    ended = time.time()
    assert proc.returncode == 0, proc.stderr[-2000:]
    *_, work_line, exit_line = proc.stdout.strip().splitlines()
    work, at_exit = json.loads(work_line), json.loads(exit_line)
    assert work["attempts"] == []
    assert at_exit["attempts_at_exit"] == []
    assert work["verdicts"] == [False, True]
    assert ended - work["done"] < 5, "the process hung at exit (telemetry flush?)"
