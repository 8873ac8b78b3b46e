"""Rendering: a compact table for stdout (case ids only, never borrower text) and a Markdown report.

The Markdown report may quote eval texts: they are synthetic, written for the eval set. Charts are plain
Unicode (bars and a shaded confusion matrix), so the report needs no plotting library and no network.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from service.evals.datasets import FIELDS
from service.evals.metrics import CONFUSION_FIELDS, LABELS, REASONS, RepliesReport, ratio
from service.evals.runner import RunResult
from service.evals.slices import SLICES

BAR_WIDTH = 30
_SHADES = " ░▒▓█"


def pct(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ids(ids: Iterable[str], limit: int = 20) -> str:
    items = list(ids)
    shown = " ".join(items[:limit])
    return shown + (f" …(+{len(items) - limit})" if len(items) > limit else "") if items else "-"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs)

    return [line(header), *(line(r) for r in rows)]


def _field_rows(rep: RepliesReport) -> list[list[str]]:
    rows = []
    for name in FIELDS:
        s = rep.fields[name]
        rows.append(
            [
                name,
                str(s.pinned),
                pct(s.accuracy),
                f"{pct(s.rules_precision)} ({s.rules_answered})",
                pct(s.rules_coverage, 2),
                pct(s.llm_coverage, 2),
                pct(s.uncovered, 2),
                str(s.stated),
            ]
        )
    return rows


FIELD_HEADER = [
    "field", "n", "accuracy", "rules prec (answered)", "cov rules", "cov llm", "cov none", "stated"
]
SLICE_REASONS = ("rate_lock", "closing", "deadline")
SLICE_HEADER = [
    "slice", "n", "fail", "opt-out", "false opt", *SLICE_REASONS, "needless", "loan p/c", "timeline p/c"
]
SLICE_LEGEND = (
    "rules only · recall as share k/n · needless: handed off by the rules alone / needs no person",
    "p/c: rules precision / coverage on stated cases (loan_type, timeline) · -: nothing to measure",
)


def _share(part: int, whole: int, digits: int = 2) -> str:
    """`0.50 1/2`, or a dash when there is nothing to measure."""
    value = ratio(part, whole)
    return "-" if value is None else f"{value:.{digits}f} {part}/{whole}"


def _prec_cov(rep: RepliesReport, name: str) -> str:
    s = rep.fields[name]
    prec, cov = s.rules_precision, s.rules_coverage
    return "-" if prec is None and cov is None else f"{pct(prec, 2)}/{pct(cov, 2)}".replace("n/a", "-")


def _slice_row(name: str, rep: RepliesReport | None) -> list[str]:
    if rep is None:
        return [name, "0", *["-"] * (len(SLICE_HEADER) - 2)]
    return [
        name,
        str(rep.total),
        str(len(rep.failed_ids)),
        _share(rep.optout_found, rep.optout_positives),
        f"{len(rep.false_optouts)}/{rep.optout_negatives}" if rep.optout_negatives else "-",
        *(_share(rep.reasons[r].rules_found, rep.reasons[r].required) for r in SLICE_REASONS),
        _share(len(rep.needless_handoffs), rep.needs_no_person, 3),
        _prec_cov(rep, "loan_type"),
        _prec_cov(rep, "timeline"),
    ]


def _reason_rows(rep: RepliesReport) -> list[list[str]]:
    """Rules recall of every handoff reason, for the whole set and each slice."""
    rows = []
    for name, sub in [("all", rep), *((n, rep.slices.get(n)) for n in SLICES)]:
        cells = [_share(sub.reasons[r].rules_found, sub.reasons[r].required) if sub else "-" for r in REASONS]
        rows.append([name, *cells])
    return rows


def _slice_rows(rep: RepliesReport) -> list[list[str]]:
    """The whole set, then one row per slice (a slice with no cases: dashes)."""
    return [_slice_row("all", rep), *(_slice_row(name, rep.slices.get(name)) for name in SLICES)]


def table(result: RunResult) -> str:
    """The compact stdout summary: numbers and case ids only."""
    cfg = result.config
    if result.skipped:
        return result.skipped
    out: list[str] = []
    rep = result.replies
    secs = " · ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items())
    llm = f"{cfg.llm}" + (f" ({result.llm_model})" if result.llm_model else "")
    if rep is not None:
        out.append(
            f"textback evals · {rep.total} replies · llm: {llm} · policy set {result.policy_version} · {secs}"
        )
        out += _grid(FIELD_HEADER, _field_rows(rep))
        reasons = "  ".join(
            f"{r} {s.rules_found}/{s.required}" + (f"→{s.final_found}" if cfg.llm != "none" else "")
            for r, s in rep.reasons.items()
            if s.required
        )
        out.append(f"handoff recall (rules{'→final' if cfg.llm != 'none' else ''}): {reasons or '-'}")
        out.append(
            f"opt-out recall {pct(rep.optout_recall)} ({rep.optout_found}/{rep.optout_positives}) · "
            f"false opt-outs {len(rep.false_optouts)}/{rep.optout_negatives} "
            f"(rate {pct(rep.false_optout_rate)}) "
            f"{_ids(rep.false_optouts) if rep.false_optouts else ''}".rstrip()
        )
        out.append(
            f"needless handoffs {pct(rep.needless_handoff_rate)} ({len(rep.needless_handoffs)}/"
            f"{rep.needs_no_person} needing no person) {_ids(rep.needless_handoffs, 10)}"
        )
        loan_cov = result.thresholds.replies.rules_coverage_min.get("loan_type")
        tag = loan_cov.tag if loan_cov else None
        if tag:
            stated, covered = rep.tag_coverage.get("loan_type", {}).get(tag, (0, 0))
            share = pct(covered / stated if stated else None)
            out.append(f"loan_type rules coverage on {tag}: {share} ({covered}/{stated})")
        out.append(f"by slice ({SLICE_LEGEND[0]};")
        out.append(f"  {SLICE_LEGEND[1]}):")
        out += _grid(SLICE_HEADER, _slice_rows(rep))
        out.append(
            f"LLM call rate (needs_llm) {pct(rep.llm_call_rate)} ({rep.llm_calls}/{rep.total})"
            + (f" · LLM failures {rep.llm_errors}" if cfg.llm != "none" else "")
        )
        by_field: dict[str, list[str]] = {}
        for f in rep.failures:
            by_field.setdefault(f.field, []).append(f.case_id)
        out.append(f"cases failing at least one field: {len(rep.failed_ids)}/{rep.total}")
        for name, ids in by_field.items():
            out.append(f"  {name}: {_ids(ids, 40)}")
    g = result.guard
    if g is not None:
        out.append(
            f"guard: block recall {pct(g.block_recall)} ({g.blocked}/{g.must_block}) · false-block rate "
            f"{pct(g.false_block_rate)} ({len(g.falsely_blocked)}/{g.must_pass})"
        )
        for name, cat in g.categories.items():
            out.append(
                f"  {name}: block recall {pct(cat.block_recall)} ({cat.blocked}/{cat.must_block}) · "
                f"false-block rate {pct(cat.false_block_rate)} ({len(cat.falsely_blocked)}/{cat.must_pass})"
            )
        if g.missed:
            out.append(f"  let through: {_ids(g.missed, 40)}")
        if g.falsely_blocked:
            out.append(f"  falsely blocked: {_ids(g.falsely_blocked, 40)}")
    if result.broken:
        out.append(f"THRESHOLDS BROKEN ({len(result.broken)}):")
        out += [f"  ✗ {line}" for line in result.broken]
    else:
        out.append("thresholds: all hold ✓")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ markdown
def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    aligns = ["---"] + ["--:"] * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(aligns) + " |",
        *("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows),
    ]


def _bar(parts: list[tuple[float, str]]) -> str:
    cells = ""
    for share, char in parts:
        cells += char * round(share * BAR_WIDTH)
    return cells[:BAR_WIDTH].ljust(BAR_WIDTH, "·")


def _coverage_chart(rep: RepliesReport, llm: bool) -> list[str]:
    legend = f"█ rules{'  ▓ LLM' if llm else ''}  ░ neither"
    lines = ["```text", f"coverage by layer (cases that state the field)   {legend}"]
    for name in FIELDS:
        s = rep.fields[name]
        if not s.stated:
            continue
        rules, by_llm = s.rules_coverage or 0.0, s.llm_coverage or 0.0
        rest = max(0.0, 1.0 - rules - by_llm)
        lines.append(
            f"{name:<18} {_bar([(rules, '█'), (by_llm, '▓'), (rest, '░')])} "
            f"{rules:5.0%} rules" + (f" {by_llm:4.0%} llm" if llm else "") + f"  (n={s.stated})"
        )
    lines.append("```")
    return lines


def _confusion(rep: RepliesReport, name: str) -> list[str]:
    labels = list(LABELS[name])
    counts = rep.confusion[name]
    peak = max(counts.values(), default=1)
    header = ["expected ↓ / got →", *labels]
    rows = []
    for exp in labels:
        row: list[Any] = [f"**{exp}**"]
        for got in labels:
            n = counts.get((exp, got), 0)
            shade = _SHADES[min(len(_SHADES) - 1, round(n / peak * (len(_SHADES) - 1)))] if n else ""
            cell = f"{n}" if exp == got else (f"**{n}**" if n else "·")
            row.append(f"{shade} {cell}".strip())
        rows.append(row)
    return _md_table(header, rows)


def _tag_chart(rep: RepliesReport) -> list[str]:
    lines = ["```text", "share of cases with every pinned field right, by tag"]
    for tag, (n, right) in sorted(rep.tags.items(), key=lambda kv: (kv[1][1] / kv[1][0], kv[0])):
        share = right / n
        lines.append(f"{tag:<28} {_bar([(share, '█')])} {share:5.0%} ({right}/{n})")
    lines.append("```")
    return lines


def markdown(result: RunResult) -> str:
    cfg = result.config
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md: list[str] = ["# textback eval report", ""]
    if result.skipped:
        return "\n".join([*md, result.skipped, ""])
    rep, g = result.replies, result.guard
    md.append(
        f"Generated {now} by `textback evals run --llm {cfg.llm}`"
        + (f" (model `{result.llm_model}`)" if result.llm_model else "")
        + f". Policy set `{result.policy_version}`"
        + ". The texts quoted below are synthetic eval cases."
    )
    md.append("")
    md.append("## Thresholds")
    md.append("")
    if result.broken:
        md += [f"- ❌ {line}" for line in result.broken]
    else:
        md.append("- ✅ every threshold in `evals/thresholds.yaml` holds")
    md.append("")
    if rep is not None:
        md += ["## Replies", "", f"{rep.total} labelled replies; LLM call rate (rules asked for the LLM) "
               f"{pct(rep.llm_call_rate)} ({rep.llm_calls}/{rep.total})."]
        if cfg.llm != "none":
            md.append(f"LLM failures (each one hands the lead to a human): {rep.llm_errors}.")
        md += ["", *_md_table(FIELD_HEADER, _field_rows(rep)), ""]
        md.append(
            "*accuracy*: the value the service acts on is accepted, over the cases that pin the field. "
            "*rules prec*: how often a rules answer is right, over the cases where the rules answered. "
            "*cov*: who answered, over the cases that state the field."
        )
        md += ["", "### Coverage by layer", "", *_coverage_chart(rep, cfg.llm != "none"), ""]
        md += ["### Opt-outs", ""]
        md.append(
            f"- recall {pct(rep.optout_recall)} ({rep.optout_found}/{rep.optout_positives}); missed: "
            f"{_ids(rep.optout_missed)}"
        )
        md.append(
            f"- false opt-outs {len(rep.false_optouts)} of {rep.optout_negatives} "
            f"(rate {pct(rep.false_optout_rate)}): {_ids(rep.false_optouts)}"
        )
        md += ["", "### Needless handoffs", ""]
        md.append(
            f"Replies that need no person (their only accepted handoff set is the empty one) that the rules "
            f"alone would put in front of one (a handoff reason, or unsure about safety): "
            f"{pct(rep.needless_handoff_rate)} ({len(rep.needless_handoffs)}/{rep.needs_no_person}): "
            f"{_ids(rep.needless_handoffs)}"
        )
        md += ["", "### By slice", "", *_md_table(SLICE_HEADER, _slice_rows(rep)), "", f"*{'; '.join(SLICE_LEGEND)}*.", ""]
        md += ["Handoff recall by the rules, every reason:", "", *_md_table(["slice", *REASONS], _reason_rows(rep))]
        md += ["", "### Handoff by reason", ""]
        md += _md_table(
            ["reason", "required", "rules recall", "final recall", "predicted", "precision", "rules missed"],
            [
                [
                    r,
                    s.required,
                    pct(s.rules_recall),
                    pct(s.recall),
                    s.predicted,
                    pct(s.precision),
                    _ids(s.missed_by_rules, 12),
                ]
                for r in REASONS
                for s in [rep.reasons[r]]
            ],
        )
        md += ["", "### Per-label precision and recall", ""]
        for name in LABELS:
            md += [f"**{name}**", ""]
            md += _md_table(
                ["label", "predicted", "precision", "expected", "recall"],
                [
                    [lbl, s.predicted, pct(s.precision), s.actual, pct(s.recall)]
                    for lbl, s in rep.labels[name].items()
                ],
            )
            md.append("")
        md += ["### Confusion matrices", "", "Cases with one accepted value; errors in bold.", ""]
        for name in CONFUSION_FIELDS:
            md += [f"**{name}**", "", *_confusion(rep, name), ""]
        md += ["### By tag", "", *_tag_chart(rep), ""]
        md += ["### Failures", ""]
        if rep.failures:
            text_of = {o.case.id: o.case for o in result.outcomes}
            md += _md_table(
                ["id", "field", "expected", "got", "text", "received"],
                [
                    [f.case_id, f.field, f.expected, f.got, text_of[f.case_id].text.replace("\n", "⏎"),
                     text_of[f.case_id].received_at.date().isoformat()]
                    for f in rep.failures
                ],
            )
        else:
            md.append("None.")
        md.append("")
    if g is not None:
        md += ["## Output guard (red-team set)", ""]
        md.append(
            f"- block recall {pct(g.block_recall)} ({g.blocked}/{g.must_block}); false-block rate "
            f"{pct(g.false_block_rate)} ({len(g.falsely_blocked)}/{g.must_pass})"
        )
        md.append("")
        md += _md_table(
            ["category", "block recall", "false-block rate"],
            [
                [name, f"{pct(cat.block_recall)} ({cat.blocked}/{cat.must_block})",
                 f"{pct(cat.false_block_rate)} ({len(cat.falsely_blocked)}/{cat.must_pass})"]
                for name, cat in g.categories.items()
            ],
        )
        wrong = [o for o in g.outcomes if (o.case.expect == "block") == o.allowed]
        md.append("")
        if wrong:
            md += _md_table(
                ["id", "category", "expected", "guard", "rules", "text", "why"],
                [
                    [o.case.id, o.case.category, o.case.expect, "pass" if o.allowed else "block",
                     ", ".join(o.rules) or "-", o.case.text, o.case.why]
                    for o in wrong
                ],
            )
        else:
            md.append("Every red-team text got the expected verdict.")
        md.append("")
    return "\n".join(md)
