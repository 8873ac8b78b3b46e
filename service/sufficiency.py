"""The verdict rule of the sufficiency report: one reviewable file a broker can read and edit.

    policies/reporting/sufficiency.yaml   kind: sufficiency

Enough when at least `min_reached_share` of the missed-call leads reached a person within
`reached_within_minutes` of the missed call, and at most `max_called_again_share` called again before anyone
reached them; "not enough data" (enough: null) below `min_missed_call_leads`. Shares are compared exactly
(as fractions), so 16 of 20 meets 0.80. The file's examples are figures with the verdict they must get;
`textback policy check` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from service.policy.files import PolicyFileModel, load_policy_model, policy_version

SUFFICIENCY_FILE = Path("reporting") / "sufficiency.yaml"
Enough = bool | None


class Figures(BaseModel):
    """The three numbers the rule reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missed_call_leads: StrictInt = Field(ge=0)
    reached_within: StrictInt = Field(ge=0)
    called_again: StrictInt = Field(ge=0)


class VerdictExamples(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enough: list[Figures] = Field(min_length=1)
    not_enough: list[Figures] = Field(min_length=1)
    not_enough_data: list[Figures] = Field(default_factory=list)


class Windows(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    top: StrictInt = Field(default=3, ge=0, le=24)
    min_not_reached: StrictInt = Field(default=2, ge=1)


class SufficiencyFile(PolicyFileModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sufficiency"]
    min_missed_call_leads: StrictInt = Field(default=20, ge=1)
    reached_within_minutes: StrictInt = Field(default=60, ge=1)
    min_reached_share: float = Field(default=0.8, ge=0, le=1)
    max_called_again_share: float = Field(default=0.15, ge=0, le=1)
    no_reply_after_hours: StrictInt = Field(default=24, ge=1)
    windows: Windows = Windows()
    examples: VerdictExamples | None = None


@dataclass(frozen=True)
class SufficiencyRule:
    """The loaded rule (the defaults above when a policy set has no such file)."""

    min_missed_call_leads: int = 20
    reached_within_minutes: int = 60
    min_reached_share: float = 0.8
    max_called_again_share: float = 0.15
    no_reply_after_hours: int = 24
    windows_top: int = 3
    windows_min_not_reached: int = 2
    examples: VerdictExamples | None = None
    path: Path | None = None
    # Which rule a report's verdict followed: the policy-set version it was read from (policy_version), the one
    # version id people see everywhere; "defaults" when the policy set has no sufficiency file.
    version: str = "defaults"

    def as_dict(self) -> dict[str, float | int]:
        return {"min_missed_call_leads": self.min_missed_call_leads,
                "reached_within_minutes": self.reached_within_minutes,
                "min_reached_share": self.min_reached_share, "max_called_again_share": self.max_called_again_share}

    def verdict(self, leads: int, reached_within: int, called_again: int) -> tuple[Enough, str]:
        """(enough, the reason in words with its numbers)."""
        if leads < self.min_missed_call_leads:
            return None, (f"Not enough data: {leads} missed-call lead{'s' if leads != 1 else ''} in this period; "
                          f"the rule needs at least {self.min_missed_call_leads} before it says anything.")
        minutes = self.reached_within_minutes
        reached_ok = Fraction(reached_within, leads) >= Fraction(str(self.min_reached_share))
        again_ok = Fraction(called_again, leads) <= Fraction(str(self.max_called_again_share))
        reached = (f"{reached_within} of {leads} missed-call leads ({_pct(reached_within, leads)}) reached a person "
                   f"within {minutes} minutes (the rule: at least {_pct_of(self.min_reached_share)})")
        again = (f"{called_again} of {leads} ({_pct(called_again, leads)}) called again before anyone reached them "
                 f"(the rule: at most {_pct_of(self.max_called_again_share)})")
        if reached_ok and again_ok:
            return True, f"Enough: {reached}, and {again}."
        return False, f"Not enough: {reached}, and {again}."

    def example_findings(self) -> list[str]:
        """Each example whose verdict is not the one the file gives it; empty when they agree."""
        if self.examples is None:
            return []
        findings = []
        expected: list[tuple[Enough, list[Figures]]] = [
            (True, self.examples.enough), (False, self.examples.not_enough), (None, self.examples.not_enough_data)]
        names = {True: "enough", False: "not_enough", None: "not_enough_data"}
        for want, figures in expected:
            for example in figures:
                got, _ = self.verdict(example.missed_call_leads, example.reached_within, example.called_again)
                if got is not want:
                    findings.append(f"{self.path}: example {example.model_dump()} is listed under {names[want]} "
                                    f"but the rule says {names[got]}")
        return findings


def _pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "n/a"


def _pct_of(share: float) -> str:
    return f"{round(100 * share)}%"


def load_sufficiency(policies_dir: Path) -> SufficiencyRule:
    """Read policies/reporting/sufficiency.yaml strictly (PolicyError naming the file and field); the defaults
    when the policy set has no such file."""
    path = policies_dir / SUFFICIENCY_FILE
    if not path.exists():
        return SufficiencyRule()
    loaded = load_policy_model(path, SufficiencyFile)
    return SufficiencyRule(
        min_missed_call_leads=loaded.min_missed_call_leads, reached_within_minutes=loaded.reached_within_minutes,
        min_reached_share=loaded.min_reached_share, max_called_again_share=loaded.max_called_again_share,
        no_reply_after_hours=loaded.no_reply_after_hours, windows_top=loaded.windows.top,
        windows_min_not_reached=loaded.windows.min_not_reached, examples=loaded.examples, path=path,
        version=policy_version(policies_dir))
