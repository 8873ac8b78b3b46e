"""The output guard: every borrower-facing text passes a guardrails Guard built from the outbound rules.

    guard = OutputGuard.load(Path("policies"))   # imports guardrails (~5 s) once: do it at start-up
    result = guard.check(text, required={"brokerage": "Harbor Home Loans", "nmls_id": "1234567"})
    result.allowed, result.violations, result.policy_version

How it is built, and why:
- One custom validator, registered as ``textback/outbound-policy`` with ``@register_validator``, reads the
  outbound_rule files and the per-text ``required`` values (passed as guardrails metadata). It reports every
  violation of every rule as error spans, so one check gives the whole finding, not just the first.
- ``on_fail="refrain"``: a failing text is withheld (validated output None), never "fixed".
- guardrails fails open when a named validator is not registered, so ``load`` verifies the registry and the
  Guard's validators. It also holds the rules to the compliance manifest (policies/outbound/required.yaml:
  every required rule present at its minimum severity) and runs every example of every rule, and the
  manifest's own, through the finished Guard (service.policy.selftest; cached per policy version);
  anything unexpected raises PolicyError and the service does not start.
- Offline and quiet: no hub validators; ``allow_metrics_collection=False`` on the Guard (creating a Guard
  re-reads ~/.guardrailsrc, which defaults metrics on), ``settings.disable_tracing = True`` and
  ``GUARDRAILS_RUN_SYNC=true`` (sequential validation: ~0.7 ms a text instead of ~3 ms, and no event loop,
  so ``check`` works from inside an async handler's worker thread).
- guardrails is imported inside ``load`` only: importing this module stays cheap (``scan`` needs none).
- ``check`` holds a lock around the Guard (its call history is shared state), so one OutputGuard can be used
  from several threads.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from service.errors import PolicyError
from service.policy.files import LoadedRule, OutboundRule, display_path, load_outbound_rules, policy_version

if TYPE_CHECKING:
    from service.policy.selftest import SelfTest

VALIDATOR_NAME = "textback/outbound-policy"
_SEPARATOR = ": "


@dataclass(frozen=True)
class Violation:
    """One thing a text must not say (`rule` is the rule id) or must say (`required-<name>`)."""

    rule: str
    match: str


@dataclass(frozen=True)
class GuardResult:
    """The guard's verdict on one text. `warnings` come from warn-severity rules and never block."""

    allowed: bool
    violations: list[Violation]
    policy_version: str
    warnings: list[Violation] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# The pure part: normalisation and regex matching, shared by the validator and `scan`.

_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_URL = re.compile(r"(?P<host>(?:https?://|www\.)[^\s/?#]*)(?P<rest>\S*)", re.IGNORECASE)
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_SEPARATORS = re.compile(r"[/?=&#+_~;|-]+")
_SPACED_DECIMAL = re.compile(r"(?<=\d)\s*([.,])\s*(?=\d)")
# Marks left after NFKC: emoji variation selectors and the keycap (6\ufe0f\u20e3), strike-through and other
# combining overlays drawn over a digit. Letters with accents are single code points after NFKC and stay.
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_EMOJI_DIGITS = {"\U0001f51f": "10"}  # keycap ten has no decomposition
# Runs of three or more single characters with one separator between them: "s i x", "r.a.t.e", "H-U-D".
_SPACED_LETTERS = re.compile(
    r"(?<![\w@$])[a-z0-9@$](?P<sep>[ .\-_*])[a-z0-9@$](?:(?P=sep)[a-z0-9@$])+(?![\w@$])", re.IGNORECASE
)
# A word written with look-alike digits or symbols: "s1x", "f1ve", "tw0", "z3r0", "n0", "p3rcent", "s!x".
_LEET_WORD = re.compile(
    r"(?<![\w@$!|])(?=[\w@$!|]*[a-z])(?=[\w@$!|]*[0-9@$!|])[\w@$!|]{2,14}(?![\w@$|])", re.IGNORECASE
)
_LEET = {
    "0": "o", "1": "il", "2": "z", "3": "e", "4": "a", "5": "s", "6": "sgb", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "!": "i", "|": "il",
}
_LEET_MAX = 4  # look-alike characters per word; more is not a word worth decoding
# The words the outbound rules read. A disguised token is decoded only when it spells one of them, so
# "401k", "3rd", "5pm" and "NMLS123456" are left alone.
_RULE_WORDS = frozenset(
    """zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand million grand half quarter eighth eighths percent pct point points pts rate rates apr fixed
    down no nothing money zero cash free fee fees waived closing cost costs lock locked approved guaranteed
    government hud fha""".split()
)


# Percent-like signs NFKC leaves alone: Arabic percent, per mille, per ten thousand (a figure either way).
# The Arabic decimal and thousands separators become "." and ",". (℅, "care of", becomes "c/o" under NFKC.)
_SIGNS = str.maketrans({"\u066a": "%", "\u2030": "%", "\u2031": "%", "\u066b": ".", "\u066c": ",",
                        "\u2044": "/", "\u2215": "/"})
# Vulgar fractions ("6⅛", "5½") and super/subscript ones ("5¹⁄₂") become " 1/8" so they do not fuse with the
# digit before them under NFKC ("5½" -> "5 1/2", never "51/2").
_VULGAR = re.compile("[\u00bc-\u00be\u2150-\u215e\u2189]")
_SUPER_SUB_FRACTION = re.compile("([\u00b9\u00b2\u00b3\u2070-\u2079]+)\u2044([\u2080-\u2089]+)")
# A figure with a letter standing in for a digit: "5.O%", "6.S", "5.9O", "5.l%" (O->0, I/l->1, S->5).
_LETTER_FIGURE = re.compile(r"(?<![\w.,])([0-9OoIlSs]{1,2})([.,])([0-9OoIlSs]{1,3})(?![\w])")
_LETTER_DIGITS = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "s": "5"})

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TEENS, *_TENS, *_SCALES, "oh", "point", "and"], key=len, reverse=True))
_NUMBER_RUN = re.compile(rf"\b(?:{_NUMBER_WORD})(?:[\s-]+(?:{_NUMBER_WORD}))*\b", re.IGNORECASE)
_WORD_DOT_WORD = re.compile(rf"\b({'|'.join(_UNITS)}|{'|'.join(_TEENS)})\.({'|'.join(_UNITS)})\b", re.IGNORECASE)


def _decode_leet(token: str) -> str:
    """The rule word a disguised token spells ("s1x" -> "six"), or the token unchanged."""
    lowered = token.lower()
    if sum(ch in _LEET for ch in lowered) > _LEET_MAX:
        return token
    candidates = [""]
    for ch in lowered:
        choices = _LEET.get(ch, ch) if not ch.isalpha() else ch
        candidates = [c + choice for c in candidates for choice in choices]
    return next((word for word in candidates if word in _RULE_WORDS), token)


def _ascii_digits(ch: str) -> str:
    """Any Unicode digit (Arabic-Indic, dingbat circled) as an ASCII digit; other characters unchanged."""
    if ch in _EMOJI_DIGITS:
        return _EMOJI_DIGITS[ch]
    if ch.isascii():
        return ch
    digit = unicodedata.digit(ch, None)
    return str(digit) if digit is not None else ch


def normalize(text: str) -> str:
    """The text as the rules see it.

    NFKC (fullwidth, superscript and mathematical digits and signs become ASCII); other Unicode digits
    (dingbat circled, Arabic-Indic, keycap ten) become ASCII digits; invisible format characters and
    leftover combining marks removed (zero-width spaces used to split "5.9\u200b9%", the keycap and
    variation selector of "6\ufe0f\u20e3"); curly quotes and dashes straightened; "5 . 99" joined to "5.99";
    spaced-out letters joined ("s i x" -> "six"); rule words written with look-alike digits decoded
    ("s1x" -> "six", "n0" -> "no"); and links decoded first (percent-escapes, path and query split into
    words), so a figure hidden in a booking link ("?promo=6%25APR") is read like any other.
    """
    text = _URL.sub(_decoded_url, text)
    text = _SUPER_SUB_FRACTION.sub(r" \1/\2", text)
    text = _VULGAR.sub(lambda m: " " + unicodedata.normalize("NFKC", m.group(0)), text).translate(_SIGNS)
    text = unicodedata.normalize("NFKC", text).translate(_SIGNS)
    text = "".join(_ascii_digits(ch) for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = _SPACED_DECIMAL.sub(r"\1", text.translate(_QUOTES))
    text = _LETTER_FIGURE.sub(_letter_figure, _decode_words(text))
    return _spelled_numbers(_WORD_DOT_WORD.sub(r"\1 point \2", text))


def _letter_figure(m: re.Match[str]) -> str:
    """"5.O" -> "5.0" when the token has a real digit and a stand-in letter; anything else unchanged."""
    whole = m.group(0)
    if not any(ch.isdigit() for ch in whole) or whole.isdigit() or not any(ch.isalpha() for ch in whole):
        return whole
    return m.group(1).translate(_LETTER_DIGITS) + m.group(2) + m.group(3).translate(_LETTER_DIGITS)


def _spelled_numbers(text: str) -> str:
    """Compound spelled-out numbers as digits, so every figure rule reads them: "twenty-one hundred" ->
    "2,100", "fifteen hundred" -> "1,500", "twenty-five" -> "25", "six point two five" -> "6.25". A lone
    number word ("six", "twenty") is left as a word: it is as often a time or a count as a figure, and the
    rules read those words in context."""
    return _NUMBER_RUN.sub(lambda m: _convert_run(m.group(0)), text)


def _convert_run(run: str) -> str:
    tokens = re.split(r"([\s-]+)", run)
    words, seps = tokens[0::2], tokens[1::2]
    out: list[str] = []
    i = 0
    while i < len(words):
        end, value = _parse_number(words, i)
        if value is None or end - i < 2:  # not a number, or a lone word: keep the word as written
            out.append(words[i] + (seps[i] if i < len(seps) else ""))
            i += 1
            continue
        out.append(value + (seps[end - 1] if end - 1 < len(seps) else ""))
        i = end
    return "".join(out)


def _parse_number(words: list[str], start: int) -> tuple[int, str | None]:
    """The longest well-formed number starting at words[start]: (end index, digits) or (start, None)."""
    total, current, last, best = 0, 0, "", (start, None)
    i = start
    while i < len(words):
        word = words[i].lower()
        if word in _UNITS and last in ("", "tens", "hundred", "and"):
            current += _UNITS[word]
            last = "unit"
        elif word in _TEENS and last in ("", "hundred", "and"):
            current += _TEENS[word]
            last = "teen"
        elif word in _TENS and last in ("", "hundred", "and"):
            current += _TENS[word]
            last = "tens"
        elif word == "hundred" and last in ("unit", "teen", "tens") and current < 100:
            current *= 100
            last = "hundred"
        elif word in ("thousand", "million") and last in ("unit", "teen", "tens", "hundred"):
            total += current * _SCALES[word]
            current, last = 0, "hundred"
        elif word == "and" and last == "hundred":
            last = "and"
            i += 1
            continue  # "and" only counts when a number follows it
        elif word == "point" and last in ("unit", "teen", "tens") and total == 0:
            after = [0 if w.lower() == "oh" else _UNITS.get(w.lower(), -1) for w in words[i + 1 : i + 4]]
            digits = [str(d) for d in takewhile(lambda d: d >= 0, after)]
            if digits:
                return i + 1 + len(digits), f"{current}.{''.join(digits)}"
            break
        else:
            break
        i += 1
        value = total + current
        best = (i, f"{value:,}" if value >= 1000 else str(value))
    return best


def _decoded_url(url: re.Match[str]) -> str:
    """A link as its reader sees it once opened: percent-escapes decoded (repeatedly, so "%2525" is "%"),
    and the path and query split into words ("?promo=6%25APR" -> " promo 6%APR", "/low-rates" -> " low rates").
    The host is kept as it is."""
    rest = url.group("rest")
    for _ in range(3):
        if not _URL_ESCAPE.search(rest):
            break
        rest = unquote(rest, errors="replace")
    return url.group("host") + " " + _URL_SEPARATORS.sub(" ", rest).strip() if rest else url.group("host")


def _decode_words(text: str) -> str:
    """Spaced-out runs joined ("s i x" -> "six"), then disguised rule words decoded ("s1x" -> "six")."""
    text = _SPACED_LETTERS.sub(lambda m: _joined(m.group(0), m.group("sep")), text)
    return _LEET_WORD.sub(lambda m: _decode_leet(m.group(0)), text)


def _joined(run: str, sep: str) -> str:
    """A spaced-out run joined, when it has a letter in it ("1 2 3" stays as it is)."""
    return run.replace(sep, "") if any(ch.isalpha() for ch in run) else run


def _mask(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    for pattern in patterns:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def rule_matches(rule: OutboundRule, normalized: str) -> list[str]:
    """Every match of one rule (overlapping ones merged) in an already normalized text, in order."""
    masked = _mask(normalized, rule.compiled_allow)
    spans: list[tuple[int, int]] = []
    for pattern in rule.compiled:
        spans.extend(m.span() for m in pattern.finditer(masked) if m.group(0).strip())
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if kept and start < kept[-1][1]:
            kept[-1] = (kept[-1][0], max(kept[-1][1], end))  # overlapping matches become one finding
            continue
        kept.append((start, end))
    return [normalized[start:end].strip() for start, end in kept]


def required_missing(text: str, required: Mapping[str, str]) -> list[Violation]:
    """A `required-<name>` violation for each required value that does not appear in the text."""
    folded = normalize(text).casefold()
    return [
        Violation(rule=f"required-{name}", match=value)
        for name, value in sorted(required.items())
        if not value or normalize(value).casefold() not in folded
    ]


def content_violations(text: str, required: Mapping[str, str], template: str | None) -> list[Violation]:
    """What the text must say and does not: the caller's required values, then what its template kind
    requires by code (service.policy.required_content: NMLS ID, brokerage, opt-out, help contact)."""
    from service.policy.required_content import missing_content  # noqa: PLC0415 - no import cycle

    found = required_missing(text, required)
    seen = {v.rule for v in found}
    for requirement in missing_content(normalize(text), template, required, normalize):
        rule = f"required-{requirement.name}"
        if rule not in seen:
            seen.add(rule)
            given = not requirement.value or required.get(requirement.value, "").strip()
            what = requirement.what if given else f"{requirement.what} (no value given to check the text against)"
            found.append(Violation(rule=rule, match=what))
    return found


def scan(text: str, rules: Sequence[OutboundRule], *, severity: str | None = "block") -> list[Violation]:
    """The rules' regex logic without guardrails: cheap, for reports and tools. Sending uses OutputGuard."""
    normalized = normalize(text)
    return [
        Violation(rule=rule.id, match=match)
        for rule in rules
        if severity is None or rule.severity == severity
        for match in rule_matches(rule, normalized)
    ]


# ---------------------------------------------------------------------------------------------------------
# The guardrails part. Nothing below imports guardrails at module import time.


@cache
def _validator_class() -> type:
    """Define and register the custom validator (once per process)."""
    from guardrails.validator_base import (  # noqa: PLC0415 - guardrails is imported lazily on purpose
        ErrorSpan,
        FailResult,
        PassResult,
        Validator,
        register_validator,
    )

    @register_validator(name=VALIDATOR_NAME, data_type="string")
    class OutboundPolicy(Validator):
        """Fails a text that matches any block rule, lacks a required value (metadata["required"]) or lacks
        what its template kind must say (metadata["template"])."""

        def __init__(self, rules: Sequence[OutboundRule], on_fail: str = "refrain") -> None:
            super().__init__(on_fail=on_fail, rule_ids=[r.id for r in rules])
            self._rules = [r for r in rules if r.severity == "block"]

        def _validate(self, value: Any, metadata: dict[str, Any]) -> Any:
            text = value if isinstance(value, str) else str(value)
            required, template = metadata.get("required") or {}, metadata.get("template")
            found = scan(text, self._rules) + content_violations(text, required, template)
            if not found:
                return PassResult()
            spans = [
                ErrorSpan(start=0, end=len(text), reason=f"{v.rule}{_SEPARATOR}{v.match}") for v in found
            ]
            rules = ", ".join(sorted({v.rule for v in found}))
            return FailResult(error_message=f"text breaks outbound policy: {rules}", error_spans=spans)

    return OutboundPolicy


def _quiet_guardrails() -> None:
    """Telemetry and tracing off for the whole process; sequential validation."""
    os.environ["GUARDRAILS_RUN_SYNC"] = "true"
    from guardrails.settings import settings  # noqa: PLC0415

    settings.disable_tracing = True


def _telemetry_off() -> None:
    # HubTelemetry is a process-wide singleton that any Guard created later without
    # allow_metrics_collection=False switches back on; make sure it is off before every check.
    from guardrails.utils.hub_telemetry_utils import HubTelemetry  # noqa: PLC0415

    HubTelemetry()._enabled = False  # noqa: SLF001 - no public switch exists


class OutputGuard:
    """The guardrails Guard over the outbound rules. Build with `OutputGuard.load(policies_dir)`."""

    def __init__(self, guard: Any, rules: list[LoadedRule], version: str) -> None:
        self._guard = guard
        self._lock = threading.Lock()
        self.rules = rules
        self.policy_version = version
        self.self_test: SelfTest | None = None  # set by `load`: how many examples, and whether cached

    @classmethod
    def load(cls, policies_dir: Path, *, cache_dir: Path | None = None) -> OutputGuard:
        """Read the outbound rules, hold them to the manifest, build the Guard and run every example through
        it (skipped when `cache_dir` records a pass for this exact policy set and guard code). PolicyError,
        naming the file, if anything is off: the service must not start."""
        from service.policy.manifest import load_manifest, manifest_findings  # noqa: PLC0415
        from service.policy.selftest import run_self_test  # noqa: PLC0415

        rules = load_outbound_rules(policies_dir)
        manifest = load_manifest(policies_dir)
        findings = manifest_findings(manifest, rules)
        if findings:
            raise findings[0]
        output_guard = cls.from_rules(rules, policy_version(policies_dir), policies_dir)
        output_guard.self_test = run_self_test(output_guard, policies_dir, manifest, cache_dir)
        return output_guard

    @classmethod
    def from_rules(cls, rules: list[LoadedRule], version: str, policies_dir: Path) -> OutputGuard:
        """Build and verify the Guard over these rules, without the manifest or the examples.

        Only `policy check` uses this directly: it reports every manifest finding and every failing example
        itself. Everything that checks texts for real goes through `load`.
        """
        _quiet_guardrails()
        from guardrails import Guard  # noqa: PLC0415
        from guardrails.settings import settings  # noqa: PLC0415
        from guardrails.validator_base import validators_registry  # noqa: PLC0415

        where = display_path(policies_dir / "outbound", policies_dir)
        validator_cls = _validator_class()
        if validators_registry.get(VALIDATOR_NAME) is not validator_cls:
            raise PolicyError(where, None, f"validator {VALIDATOR_NAME} is not registered with guardrails")
        guard = Guard(name="textback-outbound", history_max_length=1)
        guard.configure(allow_metrics_collection=False)
        settings.rc.enable_metrics = False  # validators read this when they are created
        guard.use(validator_cls([loaded.rule for loaded in rules]))
        named = [v.rail_alias for v in guard.get_validators("output")]
        if named != [VALIDATOR_NAME]:
            raise PolicyError(where, None, f"the guard runs {named}, expected [{VALIDATOR_NAME!r}]")
        return cls(guard, rules, version)

    def check(
        self, text: str, *, required: Mapping[str, str] | None = None, template: str | None = None
    ) -> GuardResult:
        """Validate one text through the Guard. Fails closed: any guard error blocks the text.

        `required`: values that must appear (the template's `requires:` and its kind's identity values);
        `template`: the template id it was rendered from, whose kind may require content by code.
        """
        metadata = {"required": dict(required or {}), "template": template}
        try:
            with self._lock:
                _telemetry_off()
                outcome = self._guard.validate(text, metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - any failure inside guardrails must block, not crash a send
            return GuardResult(False, [Violation("guard-error", type(exc).__name__)], self.policy_version)
        violations = _violations(outcome)
        allowed = bool(outcome.validation_passed) and outcome.validated_output == text and not violations
        if not allowed and not violations:
            violations = [Violation("guard-error", outcome.error or "validation did not pass")]
        warn_rules = [loaded.rule for loaded in self.rules if loaded.rule.severity == "warn"]
        warnings = scan(text, warn_rules, severity="warn") if warn_rules else []
        return GuardResult(allowed, violations, self.policy_version, warnings)


def _violations(outcome: Any) -> list[Violation]:
    found: list[Violation] = []
    for summary in outcome.validation_summaries or []:
        for span in summary.error_spans or []:
            rule, _, match = (span.reason or "").partition(_SEPARATOR)
            found.append(Violation(rule=rule, match=match))
    return found
