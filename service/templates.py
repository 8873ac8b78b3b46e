"""Fixed templates: the only words a borrower ever receives. Loaded from policies/templates/*.yaml.

A file with `language: es` (policies/templates/borrower.es.yaml) holds the Spanish variants of borrower
templates, under the same ids. Every template a reply can lead to (SPANISH_TEMPLATES) must have one, held to
the English one's rules: GSM-7, at most 2 segments, the values its English `requires:` names, opt-out
instructions where the English text has them, and the content required by code. A lead whose language is
Spanish gets the Spanish variant of every text (`render(..., language="es")`, called in one place,
service.outbox); a template with no variant (the openers: no reply yet) is rendered in English.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.errors import PolicyError
from service.policy.files import PolicyFileModel, load_policy_model
from service.policy.normalize import normalize
from service.policy.required_content import REQUIRED_BY_KIND, has_opt_out, missing_content, value_names
from service.sms import is_gsm7, non_gsm7_chars, segments

MAX_SEGMENTS = 2

# Realistic, deliberately long sample data used by `policy check` and the tests.
# The templates the service sends to a borrower (the caller), fixed in code: whatever their file says, they
# must be `audience: borrower`, so every one passes the output guard and the opt-out and quiet-hours gates.
BORROWER_TEMPLATES = frozenset({
    *REQUIRED_BY_KIND, "optout_confirm", "optin_confirm", "ask_loan_type", "ask_timeline", "ask_applied_elsewhere",
    "ready", "ready_booking", "handoff_ack", "closing_wrong_number", "closing_not_interested",
    # The honest next step (service.next_step): with a client until $callback_time, or back at the next opening.
    "handoff_ack_busy", "handoff_ack_closed", "ready_busy", "ready_busy_booking", "ready_closed",
    "ready_closed_booking",
})

# The templates a reply can lead to: each must have a Spanish variant (a lead that writes in Spanish gets it).
SPANISH_TEMPLATES = frozenset({
    "ask_loan_type", "ask_timeline", "ask_applied_elsewhere", "ready", "ready_booking", "ready_busy",
    "ready_busy_booking", "ready_closed", "ready_closed_booking", "handoff_ack", "handoff_ack_busy",
    "handoff_ack_closed", "closing_wrong_number", "closing_not_interested", "optout_confirm", "optin_confirm",
    "help",
})
LANGUAGES = ("en", "es")
# A variant's placeholder standing for an English one (the day in Spanish words).
_VARIANT_PLACEHOLDER = {"es": {"callback_day": "callback_day_es"}}

SAMPLE_VALUES: dict[str, str] = {
    "broker_name": "Alexandra Montgomery-Ruiz",
    "brokerage": "Pacific Northwest Home Lending Group",
    "nmls_id": "1234567",
    "company_nmls_id": "7654321",
    "booking_url": "https://calendly.com/alexandra-montgomery/15min",
    "broker_phone": "+15035550142",
    "caller": "+15035550199",
    "excerpt": "Hi yes we are buying in the spring, can you call after 5?",
    "known": "purchase, 3-6 months, not applied elsewhere, callback after 5",
    "reasons": "asked about a rate lock",
    # " (in Spanish)" after the caller's number in an alert about a Spanish lead, "" otherwise.
    "language_note": " (in Spanish)",
    "rules": "no-rate-quotes",
    "error": "not a mobile number",
    "reason": "120 openers in 10 minutes",
    "more": "19 more texts",
    "duration": "47",
    "recording_url": "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/"
    "RE0123456789abcdef0123456789abcdef.mp3",
    "when": "3:05 PM",
    "about": "the caller +15035550199, who needs a call back",
    "number": "+15035550142",
    "code": "482913",
    # The longest a callback can read (service.next_step): a date past this week, a time in another zone.
    "callback_time": "12:30 PM EDT",
    "callback_day": "Wednesday, Sep 30",
    "callback_day_es": "el miércoles 30 de sep",
    "waited": "2 h 45 min",
    "link": "https://textback.pacific-northwest-home-lending.example.com/l/Ab3dEf6hIj9lMn0pQr2tUv",
    # The weekly digest's numbers (service.weekly_digest), at their longest plausible.
    "week": "Sep 28", "missed": "1234", "texted": "1200", "replied": "987", "reached": "1100",
    "median": "1.5 h", "again": "123", "verdict": "callers need more than a text",
    "url": "https://textback.pacific-northwest-home-lending.example.com/console/report?broker=%2B15035550142"
    "&since=2026-09-28&until=2026-10-04",
}

_REPLACEMENTS = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u2026": "..."}


def to_gsm7(value: str) -> str:
    """Make a placeholder value GSM-7: straight quotes, dashes, accents stripped where GSM-7 lacks them."""
    out: list[str] = []
    for raw in value:
        ch = _REPLACEMENTS.get(raw, raw)
        if is_gsm7(ch):
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(base if base and is_gsm7(base) else "?")
    return "".join(out)


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    audience: Literal["borrower", "broker"]
    requires: list[str] = Field(default_factory=list)


class TemplateFile(PolicyFileModel):
    kind: Literal["templates"]
    # "en": the templates themselves; another language: variants of borrower templates, under the same ids.
    language: Literal["en", "es"] = "en"
    templates: dict[str, TemplateSpec]
    # Fixed wording a template's placeholder is built from (e.g. how each handoff reason reads in $reasons).
    phrases: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)


@dataclass(frozen=True)
class RenderedTemplate:
    template_id: str
    text: str
    audience: str
    required: dict[str, str] = field(default_factory=dict)
    language: str = "en"


@dataclass
class TemplateSet:
    templates: dict[str, TemplateSpec]
    sources: dict[str, Path]
    version: str
    phrases: dict[str, str] = field(default_factory=dict)
    # Per language other than English: the variants of borrower templates, and the file each came from.
    variants: dict[str, dict[str, TemplateSpec]] = field(default_factory=dict)
    variant_sources: dict[str, dict[str, Path]] = field(default_factory=dict)

    def uses(self, template_id: str, name: str) -> bool:
        """Whether the template has the placeholder `$name`."""
        return name in placeholders(self.templates[template_id].text)

    def phrase(self, key: str) -> str:
        """The reviewed wording for `key` (a handoff reason, a note); the key itself, readable, when none."""
        return self.phrases.get(key) or key.replace("_", " ")

    def source_of(self, rendered: RenderedTemplate) -> Path:
        """The file the rendered text's wording came from."""
        return self.variant_sources.get(rendered.language, {}).get(rendered.template_id) or \
            self.sources[rendered.template_id]

    def render(self, template_id: str, values: Mapping[str, str], language: str = "en") -> RenderedTemplate:
        """Fill a template, in `language` when it has a variant in it (else in English); a missing value is
        an error, never a blank."""
        variant = self.variants.get(language, {}).get(template_id)
        spec = variant or self.templates[template_id]
        language = language if variant is not None else "en"
        convert = to_gsm7 if spec.audience == "borrower" else str
        clean = {k: convert(str(v)) for k, v in values.items()}
        try:
            text = Template(spec.text).substitute(clean)
        except KeyError as exc:
            msg = f"template {template_id!r} needs a value for ${exc.args[0]}"
            raise KeyError(msg) from None
        names = [*spec.requires, *sorted(value_names(template_id) - set(spec.requires))]
        required = {name: clean[name] for name in names if name in clean}
        return RenderedTemplate(template_id=template_id, text=text, audience=spec.audience, required=required,
                                language=language)

    def sample_renders(self, values: Mapping[str, str] | None = None) -> list[RenderedTemplate]:
        """Every template and every variant, rendered with sample data (overridden by `values`)."""
        merged = {**SAMPLE_VALUES, **(values or {})}
        renders = [self.render(tid, merged) for tid in sorted(self.templates)]
        for language, variants in sorted(self.variants.items()):
            renders += [self.render(tid, merged, language) for tid in sorted(variants)]
        return renders

    def findings(self) -> list[str]:
        """Problems with the templates themselves: encoding and length with realistic long names."""
        out: list[str] = []
        for rendered in self.sample_renders():
            where = f"{self.source_of(rendered)}: templates.{rendered.template_id}"
            if not is_gsm7(rendered.text):
                out.append(f"{where}: not GSM-7 (characters {non_gsm7_chars(rendered.text)})")
            if segments(rendered.text) > MAX_SEGMENTS:
                out.append(f"{where}: {segments(rendered.text)} SMS segments with sample data (max {MAX_SEGMENTS})")
            for name in rendered.required:
                if rendered.required[name].lower() not in rendered.text.lower():
                    out.append(f"{where}: required value ${name} does not appear in the text")
        for key, text in sorted(self.phrases.items()):
            if not is_gsm7(text):
                out.append(f"phrases.{key}: not GSM-7 (characters {non_gsm7_chars(text)})")
        return out


def placeholders(text: str) -> set[str]:
    """The `$names` a template's text uses."""
    try:
        names = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)}
    except (ValueError, AttributeError):
        return set()
    return {name for name in names if name}


def load_templates(policies_dir: Path) -> TemplateSet:
    """Read every policies/templates/*.yaml; unknown keys, duplicates and bad placeholders are PolicyErrors."""
    templates: dict[str, TemplateSpec] = {}
    sources: dict[str, Path] = {}
    variants: dict[str, dict[str, TemplateSpec]] = {}
    variant_sources: dict[str, dict[str, Path]] = {}
    phrases: dict[str, str] = {}
    digest = hashlib.sha256()
    files = sorted((policies_dir / "templates").glob("*.yaml"))
    if not files:
        raise PolicyError(str(policies_dir / "templates"), None, "no template files found")
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        parsed = load_policy_model(path, TemplateFile)
        into, into_sources = templates, sources
        if parsed.language != "en":
            into = variants.setdefault(parsed.language, {})
            into_sources = variant_sources.setdefault(parsed.language, {})
        for tid, spec in parsed.templates.items():
            if tid in into:
                raise PolicyError(str(path), f"templates.{tid}",
                                  f"duplicate template id (also in {into_sources[tid]})")
            names = placeholders(spec.text)
            unknown = sorted(n for n in names if n not in SAMPLE_VALUES)
            if unknown:
                raise PolicyError(str(path), f"templates.{tid}.text", f"unknown placeholder(s) {unknown}")
            for req in spec.requires:
                if req not in names:
                    raise PolicyError(str(path), f"templates.{tid}.requires", f"${req} is required but not used")
            into[tid] = spec
            into_sources[tid] = path
        for key, text in parsed.phrases.items():
            if key in phrases:
                raise PolicyError(str(path), f"phrases.{key}", "duplicate phrase (defined in another file too)")
            phrases[key] = text
    template_set = TemplateSet(templates=templates, sources=sources, version=digest.hexdigest()[:12], phrases=phrases,
                               variants=variants, variant_sources=variant_sources)
    _check_required_kinds(template_set, policies_dir)
    _check_variants(template_set, policies_dir)
    return template_set


def _check_required_kinds(template_set: TemplateSet, policies_dir: Path) -> None:
    """Every template the service sends to a borrower exists and is marked borrower (so the output guard and
    the opt-out checks apply: an edit to `audience: broker` must not switch them off), and the kinds whose
    content is required by code say it when rendered with sample data (service.policy.required_content)."""
    for kind in sorted(BORROWER_TEMPLATES):
        spec = template_set.templates.get(kind)
        if spec is None:
            where = str(policies_dir / "templates")
            raise PolicyError(where, None, f"template {kind!r} is missing; the service sends it to borrowers")
        if spec.audience != "borrower":
            message = "must be borrower: the service sends it to the caller, through the output guard"
            raise PolicyError(str(template_set.sources[kind]), f"templates.{kind}.audience", message)
    for kind in REQUIRED_BY_KIND:
        where = str(template_set.sources[kind])
        rendered = template_set.render(kind, SAMPLE_VALUES)
        missing = missing_content(normalize(rendered.text), kind, SAMPLE_VALUES, normalize)
        if missing:
            what = ", ".join(r.what for r in missing)
            message = f"must carry the {what} (required by code for every {kind} text, whatever `requires:` says)"
            raise PolicyError(where, f"templates.{kind}", message)


def _check_variants(template_set: TemplateSet, policies_dir: Path) -> None:
    """Every template a reply can lead to has its Spanish variant, and every variant says what its English
    template must say: a borrower template, the values its `requires:` names, opt-out instructions when the
    English text gives them, and the content required by code for its kind."""
    spanish = template_set.variants.get("es", {})
    for kind in sorted(SPANISH_TEMPLATES - set(spanish)):
        where = str(policies_dir / "templates")
        raise PolicyError(where, None, f"template {kind!r} has no Spanish variant (language: es); a borrower who "
                          "writes in Spanish gets it")
    for language, variants in sorted(template_set.variants.items()):
        renamed = _VARIANT_PLACEHOLDER.get(language, {})
        for tid, spec in sorted(variants.items()):
            where = str(template_set.variant_sources[language][tid])
            english = template_set.templates.get(tid)
            if english is None or english.audience != "borrower":
                raise PolicyError(where, f"templates.{tid}", "a variant must be of a borrower template of the same id")
            if spec.audience != "borrower":
                raise PolicyError(where, f"templates.{tid}.audience", "must be borrower, like its English template")
            names = placeholders(spec.text)
            for req in english.requires:
                if renamed.get(req, req) not in names:
                    message = f"${renamed.get(req, req)} is required (the English template requires ${req})"
                    raise PolicyError(where, f"templates.{tid}.text", message)
            rendered = template_set.render(tid, SAMPLE_VALUES, language)
            if has_opt_out(normalize(template_set.render(tid, SAMPLE_VALUES).text)) and \
                    not has_opt_out(normalize(rendered.text)):
                message = "must carry opt-out instructions with a carrier keyword, as its English template does"
                raise PolicyError(where, f"templates.{tid}", message)
            missing = missing_content(normalize(rendered.text), tid, SAMPLE_VALUES, normalize)
            if missing:
                what = ", ".join(r.what for r in missing)
                raise PolicyError(where, f"templates.{tid}", f"must carry the {what} (required by code for {tid})")
