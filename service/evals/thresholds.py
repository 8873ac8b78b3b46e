"""The floors CI holds the evals to (``evals/thresholds.yaml``), and the check that names each broken one."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from service.evals.datasets import FIELDS
from service.evals.metrics import REASONS, GuardReport, RepliesReport
from service.yamlfile import YamlFileError, read_yaml


class ThresholdError(ValueError):
    """The thresholds file is unreadable or has unknown keys."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CoverageFloor(_Strict):
    tag: str | None = None  # measure only on cases with this tag (e.g. states_loan_type)
    min: float = Field(ge=0, le=1)


class RepliesThresholds(_Strict):
    optout_recall_min: float = Field(1.0, ge=0, le=1)
    false_optouts_max: int = Field(0, ge=0)
    rules_handoff_recall_min: dict[str, float] = Field(default_factory=dict)
    rules_precision_min: float = Field(0.98, ge=0, le=1)
    rules_coverage_min: dict[str, CoverageFloor] = Field(default_factory=dict)


class CategoryFloor(_Strict):
    block_recall_min: float | None = Field(None, ge=0, le=1)
    false_block_rate_max: float | None = Field(None, ge=0, le=1)


class GuardThresholds(_Strict):
    block_recall_min: float = Field(1.0, ge=0, le=1)
    false_block_rate_max: float = Field(0.02, ge=0, le=1)
    # Per red-team category (the dataset's `category` field). A category named here must have cases.
    categories: dict[str, CategoryFloor] = Field(default_factory=dict)


class ConversationThresholds(_Strict):
    scripts_min: int = Field(25, ge=0)  # the set must not shrink unnoticed
    failed_max: int = Field(0, ge=0)  # failing scripts not marked as a known service issue


class Thresholds(_Strict):
    replies: RepliesThresholds = Field(default_factory=RepliesThresholds)
    guard: GuardThresholds = Field(default_factory=GuardThresholds)
    conversations: ConversationThresholds = Field(default_factory=ConversationThresholds)


def load_thresholds(path: Path) -> Thresholds:
    """Read the thresholds file strictly (service.yamlfile); ThresholdError naming the file, line and field."""
    try:
        doc = read_yaml(path)
        thresholds = doc.validate(Thresholds, doc.data or {})
    except YamlFileError as exc:
        raise ThresholdError("; ".join(str(problem) for problem in exc.problems)) from None
    unknown = sorted(set(thresholds.replies.rules_handoff_recall_min) - set(REASONS))
    unknown += sorted(set(thresholds.replies.rules_coverage_min) - set(FIELDS))
    if unknown:
        raise ThresholdError(f"{path}: unknown reason or field name(s) {unknown}")
    return thresholds


def _ids(ids: list[str], limit: int = 12) -> str:
    shown = " ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def _category_broken(name: str, floor: CategoryFloor, report: GuardReport | None) -> list[str]:
    if report is None:
        return [f"guard category {name}: no red-team cases (the floor would hold on nothing)"]
    lines: list[str] = []
    recall, rate = report.block_recall, report.false_block_rate
    if floor.block_recall_min is not None and recall is not None and recall < floor.block_recall_min:
        lines.append(
            f"guard {name} block recall {recall:.3f} < {floor.block_recall_min} "
            f"({report.blocked}/{report.must_block}; let through: {_ids(report.missed)})"
        )
    if floor.false_block_rate_max is not None and rate is not None and rate > floor.false_block_rate_max:
        lines.append(
            f"guard {name} false-block rate {rate:.3f} > {floor.false_block_rate_max} "
            f"({len(report.falsely_blocked)}/{report.must_pass}; blocked: {_ids(report.falsely_blocked)})"
        )
    return lines


def broken(thresholds: Thresholds, replies: RepliesReport | None, guard: GuardReport | None) -> list[str]:
    """One line per broken threshold, naming the metric, its value, the floor and the case ids behind it."""
    lines: list[str] = []
    if replies is not None:
        t = thresholds.replies
        recall = replies.optout_recall
        if recall is not None and recall < t.optout_recall_min:
            lines.append(
                f"opt-out recall {recall:.3f} < {t.optout_recall_min} "
                f"({replies.optout_found}/{replies.optout_positives}; missed: {_ids(replies.optout_missed)})"
            )
        if len(replies.false_optouts) > t.false_optouts_max:
            lines.append(
                f"false opt-outs {len(replies.false_optouts)} > {t.false_optouts_max} "
                f"({_ids(replies.false_optouts)})"
            )
        for reason, recall_floor in t.rules_handoff_recall_min.items():
            reason_stats = replies.reasons[reason]
            value = reason_stats.rules_recall
            if value is not None and value < recall_floor:
                lines.append(
                    f"{reason} handoff recall (rules) {value:.3f} < {recall_floor} "
                    f"({reason_stats.rules_found}/{reason_stats.required}; "
                    f"missed: {_ids(reason_stats.missed_by_rules)})"
                )
        for name, field_stats in replies.fields.items():
            precision = field_stats.rules_precision
            if precision is not None and precision < t.rules_precision_min:
                lines.append(
                    f"{name} rules precision {precision:.3f} < {t.rules_precision_min} "
                    f"({field_stats.rules_right}/{field_stats.rules_answered}; wrong: {_ids(field_stats.rules_wrong)})"
                )
        for name, coverage_floor in t.rules_coverage_min.items():
            if coverage_floor.tag is None:
                stated, covered = replies.fields[name].stated, replies.fields[name].by_rules
            else:
                stated, covered = replies.tag_coverage.get(name, {}).get(coverage_floor.tag, (0, 0))
            if stated and covered / stated < coverage_floor.min:
                where = f" on cases tagged {coverage_floor.tag}" if coverage_floor.tag else ""
                lines.append(
                    f"{name} rules coverage{where} {covered / stated:.3f} < {coverage_floor.min} ({covered}/{stated})"
                )
    if guard is not None:
        g = thresholds.guard
        if guard.block_recall is not None and guard.block_recall < g.block_recall_min:
            lines.append(
                f"guard block recall {guard.block_recall:.3f} < {g.block_recall_min} "
                f"({guard.blocked}/{guard.must_block}; let through: {_ids(guard.missed)})"
            )
        if guard.false_block_rate is not None and guard.false_block_rate > g.false_block_rate_max:
            lines.append(
                f"guard false-block rate {guard.false_block_rate:.3f} > {g.false_block_rate_max} "
                f"({len(guard.falsely_blocked)}/{guard.must_pass}; blocked: {_ids(guard.falsely_blocked)})"
            )
        for name, category_floor in g.categories.items():
            lines += _category_broken(name, category_floor, guard.categories.get(name))
    return lines
