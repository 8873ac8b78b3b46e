"""What a conversation run produced and how it reads: step failures, per-script results, the report, the
broken-threshold lines, the stdout table and the Markdown section.

service.evals.driver fills these in; the eval CLI prints `table_lines` and writes `markdown_lines`. Nothing
here shows a borrower's words: numbers, script ids and template ids only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.evals.scripts import Script


@dataclass(frozen=True)
class StepFailure:
    script_id: str
    step: str  # "3" (1-based), or "end"
    what: str  # borrower | broker | http | routing | lead.<field> | opted_out
    expected: Any
    actual: Any

    def line(self) -> str:
        return f"{self.script_id} step {self.step} {self.what}: expected {self.expected} got {self.actual}"


@dataclass
class ScriptResult:
    script: Script
    failures: list[StepFailure] = field(default_factory=list)
    seconds: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)  # per step: what went out

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def known_issue(self) -> bool:
        """Marked as a known service issue and still failing, as expected."""
        return bool(self.script.known_issue) and not self.passed

    @property
    def unexpected_pass(self) -> bool:
        """Marked as a known issue but passing: the service was fixed; remove the note."""
        return bool(self.script.known_issue) and self.passed


@dataclass
class ConversationReport:
    results: list[ScriptResult]
    seconds: float

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed_ids(self) -> list[str]:
        """Scripts failing that are not marked as a known issue."""
        return [r.script.id for r in self.results if not r.passed and not r.script.known_issue]

    @property
    def known_issue_ids(self) -> list[str]:
        return [r.script.id for r in self.results if r.known_issue]

    @property
    def unexpected_pass_ids(self) -> list[str]:
        return [r.script.id for r in self.results if r.unexpected_pass]

    @property
    def failures(self) -> list[StepFailure]:
        """The failures of scripts not marked as a known issue."""
        return [f for r in self.results if not r.script.known_issue for f in r.failures]

    @property
    def known_failures(self) -> list[StepFailure]:
        return [f for r in self.results if r.script.known_issue for f in r.failures]


def broken_lines(report: ConversationReport, scripts_min: int, failed_max: int) -> list[str]:
    """One line per broken conversation threshold, naming the scripts behind it."""
    lines: list[str] = []
    if report.total < scripts_min:
        lines.append(f"conversation scripts {report.total} < {scripts_min}")
    failed = report.failed_ids
    if len(failed) > failed_max:
        lines.append(f"conversation scripts failing {len(failed)} > {failed_max} ({' '.join(failed)})")
    if report.unexpected_pass_ids:
        lines.append(
            "conversation scripts marked known_issue now pass (remove the note): "
            + " ".join(report.unexpected_pass_ids)
        )
    return lines


def table_lines(report: ConversationReport) -> list[str]:
    """The stdout section: numbers, script ids and template ids, never a borrower's words."""
    known = len(report.known_issue_ids)
    lines = [
        f"conversations: {report.passed}/{report.total} scripts pass"
        + (f" · {known} known service issue(s)" if known else "")
        + f" · {report.seconds:.2f}s"
    ]
    lines += [f"  ✗ {f.line()}" for f in report.failures]
    if known:
        lines.append(f"  known issues (still failing): {' '.join(report.known_issue_ids)}")
    if report.unexpected_pass_ids:
        lines.append(f"  marked known_issue but passing: {' '.join(report.unexpected_pass_ids)}")
    return lines


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_lines(report: ConversationReport) -> list[str]:
    md = ["## Conversations (multi-turn scripts through the webhooks)", ""]
    md.append(
        f"{report.passed}/{report.total} scripts pass ({report.seconds:.1f} s). Each runs on its own fresh "
        "SQLite database, in dry-run, rules only, every webhook signed as Twilio signs it; a step lists the "
        "template ids queued for the borrower and for the broker."
    )
    md += ["", "| script | broker | steps | result | title |", "| --- | --- | --: | --- | --- |"]
    for r in report.results:
        mark = "✅" if r.passed and not r.script.known_issue else "⚠️ known issue" if r.known_issue else "❌"
        if r.unexpected_pass:
            mark = "❗ passes: remove known_issue"
        steps = len(r.script.steps)
        md.append(f"| {r.script.id} | {r.script.broker} | {steps} | {mark} | {_cell(r.script.title)} |")
    md += ["", "### Failures", ""]
    if not report.failures:
        md.append("None.")
    else:
        md += _failure_table(report.failures)
    issues = [r for r in report.results if r.script.known_issue]
    if issues:
        md += ["", "### Known service issues", ""]
        md += [f"- **{r.script.id}**: {_cell(r.script.known_issue)}" for r in issues]
        if report.known_failures:
            md += ["", *_failure_table(report.known_failures)]
    md.append("")
    return md


def _failure_table(failures: list[StepFailure]) -> list[str]:
    rows = ["| script | step | what | expected | got |", "| --- | --: | --- | --- | --- |"]
    rows += [
        f"| {f.script_id} | {f.step} | {f.what} | {_cell(f.expected)} | {_cell(f.actual)} |" for f in failures
    ]
    return rows
