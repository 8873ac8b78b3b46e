"""The retention policy: how long each kind of record is kept, and why (one reviewable file).

    policies/retention/retention.yaml   kind: retention

Each category names the tables it covers, how long they are kept (`keep_months`, or `keep: forever`,
`with-communications` (at most as long), `while-needed` (operational records)), what `privacy forget` does with them (`on_forget: keep | delete`), why, and the
law it cites. Two categories are fixed in code because the law fixes them: `communications` is kept at least
24 months (Regulation N, 12 CFR 1014.5; the file says 25) and `opt-outs` are kept forever. `policy check` also
checks that every table of the schema sits in exactly one category, so a new table needs a retention decision.

"N months" is calendar months in UTC, counted back from now: a conversation is past retention when its last
activity is earlier than `months_before(now, N)`; when the day does not exist in that month (31 March back
25 months) it is the month's last day, at the same time of day, so a record is never deleted early.
`keep_until(last_activity)` is the first moment at which it is past retention, for what `privacy forget`
tells the borrower's broker.
"""

from __future__ import annotations

import calendar
import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from service.policy.files import PolicyFileModel, display_path, load_policy_model

RETENTION_FILE = Path("retention") / "retention.yaml"
# The floor fixed in code: Regulation N's 24 months. A policy edit cannot keep communications for less.
LAW_MONTHS = 24
DEFAULT_MONTHS = 25
CategoryId = Literal["communications", "opt-outs", "borrower-details", "replay-protection", "operational"]
CATEGORY_IDS: tuple[str, ...] = ("communications", "opt-outs", "borrower-details", "replay-protection", "operational")
REG_N = "12 CFR 1014.5 (Regulation N), 24 months from the last communication"


class Category(BaseModel):
    """One kind of record: its tables, how long they are kept, what `forget` does, why, and the law."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: CategoryId
    title: StrictStr = Field(min_length=3)
    records: list[StrictStr] = Field(min_length=1)
    keep_months: StrictInt | None = Field(default=None, ge=1)
    keep: Literal["forever", "with-communications", "while-needed"] | None = None
    on_forget: Literal["keep", "delete"]
    why: StrictStr = Field(min_length=10)
    citations: list[StrictStr] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_period(self) -> Category:
        if (self.keep_months is None) == (self.keep is None):
            msg = "give exactly one of keep_months (a number) or keep (forever | with-communications | while-needed)"
            raise ValueError(msg)
        return self

    def period(self) -> str:
        if self.keep_months is not None:
            return f"{self.keep_months} months"
        words = {"forever": "for good", "with-communications": "at most as long as the communications",
                 "while-needed": "while the service needs them"}
        return words[self.keep or "forever"]


class PurgeExample(BaseModel):
    """A conversation's last activity, the time of a purge, and whether that purge deletes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_activity: AwareDatetime
    now: AwareDatetime
    purged: StrictBool


class RetentionFile(PolicyFileModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["retention"]
    categories: list[Category] = Field(min_length=1)
    examples: list[PurgeExample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _law_floor(self) -> RetentionFile:
        ids = [c.id for c in self.categories]
        missing = [c for c in CATEGORY_IDS if c not in ids]
        twice = sorted({c for c in ids if ids.count(c) > 1})
        if missing or twice:
            msg = f"categories: missing {missing}" if missing else f"categories: listed twice {twice}"
            raise ValueError(msg)
        by_id = {c.id: c for c in self.categories}
        months = by_id["communications"].keep_months
        if months is None or months < LAW_MONTHS:
            msg = (f"communications must give keep_months of at least {LAW_MONTHS} ({REG_N}); "
                   f"got {by_id['communications'].period()}")
            raise ValueError(msg)
        if by_id["communications"].on_forget != "keep":
            msg = f"communications must say on_forget: keep ({REG_N})"
            raise ValueError(msg)
        if by_id["opt-outs"].keep != "forever" or by_id["opt-outs"].on_forget != "keep":
            msg = "opt-outs must say keep: forever and on_forget: keep (a purge must never make a number textable)"
            raise ValueError(msg)
        return self


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _shift(moment: datetime, months: int) -> tuple[int, int]:
    index = moment.year * 12 + (moment.month - 1) + months
    return index // 12, index % 12 + 1


def months_before(now: datetime, months: int) -> datetime:
    """`now` (made UTC) moved back `months` calendar months; a day the month lacks becomes its last day."""
    now = now.astimezone(UTC)
    year, month = _shift(now, -months)
    return now.replace(year=year, month=month, day=min(now.day, _last_day(year, month)))


def keep_until(last_activity: datetime, months: int) -> datetime:
    """The first moment a purge may delete a conversation last active at `last_activity` (UTC): the same day and
    time `months` calendar months later, or the first instant of the month after when that month lacks the day."""
    last = last_activity.astimezone(UTC)
    year, month = _shift(last, months)
    if last.day > _last_day(year, month):
        year, month = _shift(datetime(year, month, 1, tzinfo=UTC), 1)
        return datetime(year, month, 1, tzinfo=UTC)
    return last.replace(year=year, month=month)


@dataclass(frozen=True)
class RetentionPolicy:
    """The loaded policy (25 months and the fixed categories when a policy set has no retention file)."""

    months: int = DEFAULT_MONTHS
    categories: tuple[Category, ...] = ()
    examples: tuple[PurgeExample, ...] = ()
    display: str = "the built-in retention default (no policies/retention/retention.yaml)"
    version: str = "defaults"  # the file's content hash
    citations: tuple[str, ...] = field(default=(REG_N,))

    def cutoff(self, now: datetime) -> datetime:
        """Communications last active before this moment are past retention at `now`."""
        return months_before(now, self.months)

    def keep_until(self, last_activity: datetime) -> datetime:
        return keep_until(last_activity, self.months)

    def purged(self, last_activity: datetime, now: datetime) -> bool:
        return last_activity.astimezone(UTC) < self.cutoff(now)

    def min_days(self, now: datetime) -> int:
        """The fewest whole days back from `now` that reach no further than the policy's cutoff."""
        return math.ceil((now.astimezone(UTC) - self.cutoff(now)) / timedelta(days=1))

    def min_days_always(self) -> int:
        """The fewest days that are never shorter than the policy on any day (a four-year cycle covers every
        month length and leap day)."""
        start = datetime(2024, 1, 1, tzinfo=UTC)
        return max(self.min_days(start + timedelta(days=d)) for d in range(4 * 366))

    def describe(self) -> str:
        """'policies/retention/retention.yaml keeps communications 25 months'."""
        return f"{self.display} keeps communications {self.months} months"

    def reason(self) -> str:
        """Why communications are kept, for a privacy request's record and what the operator is told."""
        return f"{self.describe()} after the conversation's last activity: {'; '.join(self.citations)}"

    def example_findings(self) -> list[str]:
        """Each example whose outcome is not the one the file gives it; empty when they agree."""
        findings = []
        for example in self.examples:
            got = self.purged(example.last_activity, example.now)
            if got != example.purged:
                findings.append(f"{self.display}: example last_activity {example.last_activity.isoformat()}, now "
                                f"{example.now.isoformat()} says purged: {example.purged} but the rule gives {got}")
        return findings

    def coverage_findings(self, tables: set[str]) -> list[str]:
        """Every table in exactly one category, and no category naming a table that does not exist."""
        if not self.categories:
            return []
        findings = []
        owner: dict[str, str] = {}
        for category in self.categories:
            for table in category.records:
                if table not in tables:
                    findings.append(f"{self.display}: category {category.id} names {table!r}, which is no table")
                elif table in owner:
                    findings.append(f"{self.display}: table {table!r} is in both {owner[table]} and {category.id}")
                owner.setdefault(table, category.id)
        findings += [f"{self.display}: table {t!r} is in no category; say how long it is kept"
                     for t in sorted(tables - set(owner))]
        return findings


def load_retention(policies_dir: Path) -> RetentionPolicy:
    """Read policies/retention/retention.yaml strictly (PolicyError naming the file and field); the built-in
    25 months when the policy set has no such file."""
    path = policies_dir / RETENTION_FILE
    if not path.exists():
        return RetentionPolicy()
    display = display_path(path, policies_dir)
    loaded = load_policy_model(path, RetentionFile, display=display)
    communications = next(c for c in loaded.categories if c.id == "communications")
    return RetentionPolicy(
        # keep_months is always set here: the model refuses a communications category without it.
        months=communications.keep_months or DEFAULT_MONTHS,
        categories=tuple(loaded.categories), examples=tuple(loaded.examples),
        display=display, version=hashlib.sha256(path.read_bytes()).hexdigest()[:12],
        citations=tuple(communications.citations))
