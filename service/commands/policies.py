"""`textback policies export DIR`: an editable copy of the policies and prompts shipped with textback, for a
compliance team to review, edit and approve in a folder of its own (then run with TEXTBACK_POLICIES_DIR).

The copy is always of the shipped files (service.resources.shipped), whatever ./policies or the settings say,
and byte for byte, so its policy-set version is the shipped one until somebody edits it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from service.policy.files import policy_version
from service.resources import shipped, textback_version

FOLDERS = ("policies", "prompts")


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, relative to it, sorted (compiled Python caches left out)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _refusal(directory: Path, force: bool) -> str | None:
    """Why DIR cannot take the export (one line), or None."""
    if directory.exists() and not directory.is_dir():
        return f"{directory} is a file, not a folder"
    for name in FOLDERS:
        source, target = shipped(name), directory / name
        if not source.is_dir():
            return f"the {name} shipped with textback are missing ({source}): reinstall textback"
        if target.exists() and not target.is_dir():
            return f"{target} is a file, not a folder"
        if target.is_dir() and any(target.iterdir()) and not force:
            return (f"{target} is not empty; pass --force to overwrite the files textback ships there (other "
                    "files are kept)")
    return None


def _version_note(target: Path, source: Path) -> str:
    """The exported set's version, and whether it is the shipped one (kept files can make it differ)."""
    exported, ships = policy_version(target), policy_version(source)
    if exported == ships:
        return f" (policy set {exported}, as shipped with textback {textback_version()})"
    return f" (policy set {exported} with the files kept; textback {textback_version()} ships {ships})"


@click.group()
def policies() -> None:
    """The policy files shipped with textback: export an editable copy for a compliance team."""


@policies.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Write into a non-empty DIR/policies or DIR/prompts: the shipped files replace those of the same "
              "name; other files (an approvals.yaml, a new rule) are kept and listed.")
def export(directory: Path, force: bool) -> None:
    """Write the policies and prompts shipped with textback to DIR/policies and DIR/prompts, to edit and approve.

    \b
    Both folders are written (the prompt is what the LLM is told, when one is configured). Then:
      TEXTBACK_POLICIES_DIR=DIR/policies textback policy check
    and run the service with TEXTBACK_POLICIES_DIR=DIR/policies TEXTBACK_PROMPTS_DIR=DIR/prompts (or run it
    from DIR, where ./policies and ./prompts are found without settings).
    Exit status: 0 written; 1 refused (a non-empty folder without --force, a file in the way), nothing written.
    """
    refusal = _refusal(directory, force)
    if refusal is not None:
        click.echo(f"policies export: refused: {refusal}", err=True)
        sys.exit(1)
    for name in FOLDERS:
        source, target = shipped(name), directory / name
        files = _files(source)
        kept = sorted(set(_files(target)) - set(files)) if target.is_dir() else []
        for relative in files:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, target / relative)  # content only: site-packages modes stay behind
        noun = "file" if len(files) == 1 else "files"
        what = _version_note(target, source) if name == "policies" else ""
        click.echo(f"wrote {len(files)} {noun} to {target}{what}")
        for relative in kept:
            click.echo(f"  kept {target / relative} (not shipped)")
    click.echo(f"next: edit them, then check them: TEXTBACK_POLICIES_DIR={directory / 'policies'} "
               "textback policy check")
    click.echo(f"run the service with them: TEXTBACK_POLICIES_DIR={directory / 'policies'} "
               f"TEXTBACK_PROMPTS_DIR={directory / 'prompts'} textback serve")
