"""policies/README.md: the generated table of every policy file (`textback policy report --write-readme`)."""

from __future__ import annotations

from pathlib import Path

from service.policy.files import outbound_rules, read_policy_files
from service.policy.report_blocks import Block, to_markdown

README_COMMAND = "uv run textback policy report --write-readme"


def readme_text(policies_dir: Path) -> str:
    """policies/README.md: one table of every policy file, generated; what a reviewer reads first.

    Example counts are shown for outbound rules only, so editing another kind's examples does not make the
    table stale; the review report (`policy report`) has everything.
    """
    files, errors = read_policy_files(policies_dir)
    loaded, _ = outbound_rules(files)
    counts = {lr.rule.id: (lr.rule.severity, lr.rule.examples) for lr in loaded}
    rows = [["file", "id", "kind", "title", "severity", "examples"]]
    for policy in sorted(files, key=lambda f: f.display):
        severity, examples = "", ""
        if policy.header.id in counts:
            sev, ex = counts[policy.header.id]
            severity, examples = sev, f"{len(ex.must_match)} must_match, {len(ex.must_not_match)} must_not_match"
        else:
            data_severity = policy.data.get("severity")
            severity = str(data_severity) if isinstance(data_severity, str) else ""
        rows.append([policy.display.removeprefix("policies/"), policy.header.id, policy.header.kind,
                     policy.header.title.strip(), severity, examples])
    blocks = [
        Block("h1", "Policies"),
        Block(
            "p",
            "Everything textback may say or do is decided by the files in this folder. Each file has a "
            "plain-English title, a `summary` of what it blocks, routes or allows, a rationale, the laws it "
            "`cites`, any `open_questions` for counsel, and examples that CI runs (`uv run textback policy "
            "check`). The reviewer's report, with every rule in plain words, every template rendered with "
            "each broker's values and the patterns in an appendix, is `uv run textback policy report "
            "--format md|html|pdf --output review.pdf`.",
        ),
        Block(
            "p",
            "`outbound/required.yaml` is the compliance manifest: the outbound rules that must be in force, "
            "their minimum severity, and examples of its own that each rule must block. A required rule that "
            "is missing, renamed, downgraded or no longer blocks those examples, or a missing or empty "
            "manifest, fails `policy check` and stops the service from starting. At start-up the service also "
            "runs every example of every rule through its output guard (once per policy version, recorded "
            "under `TEXTBACK_GUARD_CACHE_DIR`) and refuses to start on any failure. The manifest is part of "
            "the policy-set version; changing it needs compliance sign-off.",
        ),
        Block(
            "p",
            "Whatever these files say, the guard must also block a floor of texts fixed in code "
            "(`service/policy/floor.py`: rate or APR quotes, payment amounts, repayment terms, loan "
            "products, approval promises, points and fees, down payments), each by a rule the manifest requires at "
            "`block`: deleting a rule file together with its manifest entry fails `policy check`, naming the "
            "category the policy set no longer covers.",
        ),
        Block("p", f"This table is generated; do not edit it by hand. Regenerate with `{README_COMMAND}`."),
        Block("table", rows),
    ]
    if errors:
        blocks += [Block("h2", "Files with errors"), Block("list", [str(e) for e in errors])]
    return to_markdown(blocks)
