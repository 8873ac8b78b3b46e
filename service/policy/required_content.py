"""What a borrower text of a given template kind must say, required by code.

A template's own ``requires:`` list is only as strong as the file it sits in: delete "Reply STOP to opt out."
or the NMLS ID from the opener together with its ``requires:`` entry and nothing noticed. These requirements
are fixed here, per template id (the service sends an ``opener`` kind to a missed caller and
``help`` in answer to HELP), and enforced three times: when the templates load (service.templates, so
`policy check` and start-up refuse), and by the output guard on every rendered text (`OutputGuard.check(...,
template=id)`).

- opener, opener_booking, and their variants for a broker with a client or out of hours (opener_busy,
  opener_closed, each with _booking): the loan officer's NMLS ID next to "NMLS" (SAFE Act, 12 CFR
  1008.105/1007.105 identification), the brokerage's name, and opt-out instructions (TCPA / CTIA: "Reply STOP
  to opt out" or an equivalent: STOP with an instruction verb and an opt-out word, in either order, English
  or Spanish).
- help: the NMLS ID, and how to get help: a phone number or "reply here" (CTIA HELP response).

The identity values (``nmls_id``, ``brokerage``) come from the broker's values the text was rendered with;
a check without them cannot show they are present and fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    name: str  # the violation is "required-<name>"
    what: str  # what is missing, for people: "opt-out instructions"
    value: str | None  # the rendered value it needs (nmls_id, brokerage), or None


NMLS = Requirement("nmls_id", "NMLS ID", "nmls_id")
BROKERAGE = Requirement("brokerage", "brokerage", "brokerage")
OPT_OUT = Requirement("opt_out", "opt-out instructions", None)
HELP_CONTACT = Requirement("help_contact", "how to get help", None)

REQUIRED_BY_KIND: dict[str, tuple[Requirement, ...]] = {
    "opener": (NMLS, BROKERAGE, OPT_OUT),
    "opener_booking": (NMLS, BROKERAGE, OPT_OUT),
    # The opener when the broker is with a client or out of hours (service.next_step): the same first text.
    "opener_busy": (NMLS, BROKERAGE, OPT_OUT),
    "opener_busy_booking": (NMLS, BROKERAGE, OPT_OUT),
    "opener_closed": (NMLS, BROKERAGE, OPT_OUT),
    "opener_closed_booking": (NMLS, BROKERAGE, OPT_OUT),
    "help": (NMLS, HELP_CONTACT),
}

_VERB = r"(?:reply|replying|text|txt|send|respond|responda|responde|env[ií]e|env[ií]a|escriba|conteste)"
_KEYWORD = r"(?:stop|stopall|unsubscribe|cancel|end|quit|optout|baja|alto)"
_OPT_OUT_WORDS = (
    r"(?:opt[\s-]?out|unsubscribe|end|cancel|quit|stop\s+(?:receiving|getting|all|these|our|further|texts|messages)"
    r"|no\s+more|darse\s+de\s+baja|cancelar|dejar\s+de\s+recibir|no\s+recibir)"
)
_OPT_OUT = [
    # Reply STOP to opt out · Reply HELP for help, STOP to opt out · Responda STOP para cancelar
    re.compile(
        rf"\b{_VERB}\b(?:\s+[\w']+){{0,4}}?[\s,:]+[\"'(]?{_KEYWORD}[\"')]?(?!\w)[^.!?\n]{{0,30}}?\b{_OPT_OUT_WORDS}\b",
        re.IGNORECASE,
    ),
    # To opt out, reply STOP · Unsubscribe: text STOP
    re.compile(
        rf"\b{_OPT_OUT_WORDS}\b[^.!?\n]{{0,20}}?\b{_VERB}\b(?:\s+(?:with|us|back))?[\s,:]+[\"'(]?{_KEYWORD}[\"')]?(?!\w)",
        re.IGNORECASE,
    ),
]
_REPLY_HERE = re.compile(
    r"\b(?:reply|respond|text\s+(?:us|me))\s+(?:here|back|to\s+(?:this|these)\s+(?:text|message)s?)\b"
    r"|\bresponda\s+(?:aqu[ií]|a\s+este\s+mensaje)\b",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)")


def _has_nmls(text: str, nmls_id: str) -> bool:
    if not nmls_id.strip():
        return False
    pattern = rf"\bnmls\b\W{{0,4}}(?:(?:id|no|number|num|#|ident\w*)\W{{0,3}})*{re.escape(nmls_id.strip())}(?!\d)"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _has_value(text: str, value: str, normalize: Callable[[str], str]) -> bool:
    return bool(value.strip()) and normalize(value).casefold() in text.casefold()


def missing_content(
    text: str, template: str | None, values: Mapping[str, str], normalize: Callable[[str], str]
) -> list[Requirement]:
    """The requirements of this template kind that `text` (already normalized) does not meet."""
    missing: list[Requirement] = []
    for requirement in REQUIRED_BY_KIND.get(template or "", ()):
        value = values.get(requirement.value, "") if requirement.value else ""
        if requirement is NMLS:
            ok = _has_nmls(text, normalize(value))
        elif requirement is BROKERAGE:
            ok = _has_value(text, value, normalize)
        elif requirement is OPT_OUT:
            ok = has_opt_out(text)
        else:
            ok = bool(_REPLY_HERE.search(text) or _PHONE.search(text))
        if not ok:
            missing.append(requirement)
    return missing


def has_opt_out(text: str) -> bool:
    """Whether `text` (already normalized) gives opt-out instructions: a carrier keyword with an opt-out word."""
    return any(p.search(text) for p in _OPT_OUT)


def value_names(template: str) -> set[str]:
    """The rendered values the kind's requirements read (so a render always passes them to the guard)."""
    return {r.value for r in REQUIRED_BY_KIND.get(template, ()) if r.value}
