"""The two sides of `textback policy diff`: a policies directory, or a git revision's policies/ folder extracted
to a temporary directory, read leniently (a file that does not read is a problem of that side, not a stop)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import PolicyError, TextbackError
from service.policy.files import OutboundRule, PolicyFile, outbound_rules, read_policy_files
from service.policy.manifest import Manifest

GIT_POLICIES = "policies"  # the folder a git revision's policy set is read from


class DiffError(TextbackError):
    """A side of the diff is neither a policies directory nor a git revision with a policies/ folder."""


@contextmanager
def policies_side(spec: str, *, cwd: Path | None = None) -> Iterator[tuple[Path, str]]:
    """The policies directory `spec` names (a directory, else a git revision extracted to a temp dir) and how
    to describe it. DiffError when it is neither."""
    path = Path(spec)
    if path.is_dir():
        yield path, f"directory {spec}"
        return
    where = cwd or Path.cwd()
    if spec.startswith("-"):
        msg = f"{spec!r} is neither a policies directory nor a git revision (it reads as an option)"
        raise DiffError(msg)
    commit = _git(where, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if commit is None:
        msg = (f"{spec!r} is neither a policies directory nor a git revision of the repository at {where} "
               "(a branch, tag, commit or HEAD~N)")
        raise DiffError(msg)
    top = _git(where, "rev-parse", "--show-toplevel")
    archive = subprocess.run(  # noqa: S603 - fixed git arguments; the revision was verified above
        ["git", "-C", top or str(where), "archive", "--format=tar", commit.strip(), GIT_POLICIES],  # noqa: S607
        capture_output=True, check=False,
    )
    if archive.returncode != 0:
        msg = f"git revision {spec} ({commit.strip()[:7]}) has no {GIT_POLICIES}/ folder"
        raise DiffError(msg)
    with tempfile.TemporaryDirectory(prefix="textback-policy-diff-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            if not hasattr(tarfile, "data_filter"):  # Python before 3.11.4: no extraction filters
                msg = "reading a git revision needs Python 3.11.4 or later (tarfile extraction filters)"
                raise DiffError(msg)
            tar.extractall(tmp, filter="data")  # git's own archive; the filter refuses paths outside tmp anyway
        yield Path(tmp) / GIT_POLICIES, f"git revision {spec} (commit {commit.strip()[:7]})"


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", "-C", str(where), *args], capture_output=True, text=True, check=False,  # noqa: S607
        )
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


@dataclass
class LoadedSet:
    """What one side's files say, read leniently (a file that does not read is a problem, not a stop)."""

    dir: Path
    files: dict[str, PolicyFile]  # by path relative to the policies directory
    outbound: dict[str, OutboundRule]
    manifest: Manifest | None
    problems: list[str]


def load_set(policies_dir: Path) -> LoadedSet:
    files, errors = read_policy_files(policies_dir)
    problems = [str(e) for e in errors]
    rules, rule_errors = outbound_rules(files)
    problems += [str(e) for e in rule_errors]
    manifest = None
    for policy in files:
        if policy.header.kind == "outbound_manifest":
            try:
                manifest = policy.validate(Manifest)
            except PolicyError as exc:
                problems.append(str(exc))
    by_path = {p.path.relative_to(policies_dir).as_posix(): p for p in files}
    return LoadedSet(policies_dir, by_path, {lr.rule.id: lr.rule for lr in rules}, manifest, problems)


def templates_of(loaded: LoadedSet) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str]]:
    """(template id, language) -> its spec as written, and every phrase."""
    templates: dict[tuple[str, str], dict[str, Any]] = {}
    phrases: dict[str, str] = {}
    for policy in loaded.files.values():
        if policy.header.kind != "templates":
            continue
        language = str(policy.data.get("language") or "en")
        for tid, spec in (policy.data.get("templates") or {}).items():
            if isinstance(spec, dict):
                templates[(str(tid), language)] = spec
        phrases.update({str(k): str(v) for k, v in (policy.data.get("phrases") or {}).items()})
    return templates, phrases
