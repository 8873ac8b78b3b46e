"""What the firm lets a person text a borrower from the business number (the console's reply box, the API's
POST /api/leads/{id}/messages): one reviewable file, read strictly like the other sending policies.

    policies/sending/human.yaml   kind: human_texts   guard: block | warn | off; quiet_hours: hold | refuse

`guard` is what the output guard's verdict on a person's text does: `block` refuses a flagged text, `warn`
(the default) refuses it until the person confirms and records the override, `off` sends without a check
(the text is still stored and audited). `quiet_hours` is what happens to a person's text while the borrower's
quiet hours are on (the windows of quiet_hours.yaml): `hold` stores it and sends it when the window opens
(the answer says until when), `refuse` sends nothing and says when the window opens. Caps on automated texts
never apply to a person's own text.

The examples are texts the guard must flag for a person (`must_match`) and texts it must let through
(`must_not_match`); `textback policy check` runs them through the real guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict

from service.policy.files import Examples, PolicyFileModel, load_policy_model

HUMAN_FILE = Path("sending") / "human.yaml"
GuardMode = Literal["block", "warn", "off"]
QuietMode = Literal["hold", "refuse"]


class HumanTextsFile(PolicyFileModel):
    """policies/sending/human.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["human_texts"]
    guard: GuardMode = "warn"
    quiet_hours: QuietMode = "hold"
    examples: Examples


@dataclass(frozen=True)
class HumanTextPolicy:
    """The loaded file (the defaults when a policy set has none: warn, hold)."""

    guard: GuardMode = "warn"
    quiet_hours: QuietMode = "hold"
    examples: Examples | None = None
    path: Path | None = None

    def example_findings(self, guard: Any) -> list[str]:
        """Each example the output guard treats otherwise than the file says; empty when they agree."""
        if self.examples is None:
            return []
        findings = [f"{self.path}: must_match example {text!r} passes the output guard"
                    for text in self.examples.must_match if guard.check(text).allowed]
        findings += [f"{self.path}: must_not_match example {text!r} is flagged by the output guard"
                     for text in self.examples.must_not_match if not guard.check(text).allowed]
        return findings


def load_human_policy(policies_dir: Path) -> HumanTextPolicy:
    """Read policies/sending/human.yaml strictly (PolicyError naming the file and field); the defaults when the
    policy set has no such file."""
    path = policies_dir / HUMAN_FILE
    if not path.exists():
        return HumanTextPolicy()
    loaded = load_policy_model(path, HumanTextsFile)
    return HumanTextPolicy(guard=loaded.guard, quiet_hours=loaded.quiet_hours, examples=loaded.examples, path=path)
