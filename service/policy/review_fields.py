"""The plain-language header a compliance officer reads: findings for a policy file that lacks it.

Every policy file carries, besides its `rationale`, a `summary` (what it blocks, routes or allows, in plain
words), `cites` (the laws it relies on), `open_questions` (for counsel) and `internal_notes` (engineering
notes the reviewer's report never shows); see service.policy.files.PolicyFileModel. `policy check` reports:
- a file without `summary`;
- a file whose rationale or summary cites law (a CFR or U.S.C. section, a state statute, the TCPA, the SAFE
  Act, a Regulation by letter) without `cites`;
- an internal note or a question for counsel left in the text the report shows (`rationale`, `summary`):
  "TODO", "issue 6", "design card", "counsel's call", "until verified by counsel". They belong in
  `internal_notes` or `open_questions`, so the signed document says only what the policy does and why.
"""

from __future__ import annotations

import re

from service.policy.files import PolicyFile

CITES_LAW = re.compile(
    r"\b\d+\s+CFR\b|\bU\.S\.C\.|\bTCPA\b|\bSAFE\s+Act\b|\bReg(?:ulation)?\.?\s+[A-Z]\b|\bStat\.|\bCode\s+Ann\.|"
    r"\bGen\.\s+Stat\.|\bN\.J\.S\.A\.|\bRCW\b",
)
INTERNAL = re.compile(
    r"\bTODO\b|\bFIXME\b|\bissue\s+#?\d+\b|\bdesign\s+card\b|counsel'?s\s+call|until\s+(?:verified|confirmed)\s+by"
    r"\s+counsel|counsel\s+should\s+confirm|until\s+counsel\s+confirms",
    re.IGNORECASE,
)


def _line(policy: PolicyFile, key: str) -> int | None:
    return policy.doc.line_of((key,)) if key in policy.data else policy.doc.line_of(("id",))


def header_findings(files: list[PolicyFile]) -> list[str]:
    """One finding per missing or misplaced plain-language field, located `file:line: field: message`."""
    findings: list[str] = []
    for policy in files:
        header = policy.header
        shown = f"{header.rationale}\n{header.summary or ''}"

        def add(key: str, message: str, policy: PolicyFile = policy) -> None:
            findings.append(f"{policy.display}:{_line(policy, key)}: {key}: {message}")

        if not (header.summary or "").strip():
            add("summary", "missing: say in one or two plain sentences (no regex) what this file blocks, routes "
                "or allows, for the compliance officer who signs the report")
        if CITES_LAW.search(shown) and not header.cites:
            add("cites", "missing: the rationale cites law; list each law or regulation it relies on")
        for key, text in (("rationale", header.rationale), ("summary", header.summary or "")):
            found = INTERNAL.search(text)
            if found:
                add(key, f"{found.group(0)!r} is an internal note or a question for counsel: move it to "
                    "internal_notes or open_questions (the report shows this text)")
    return findings
