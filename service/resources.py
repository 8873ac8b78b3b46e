"""Where the policies, the prompts and the demo brokers file come from, and the start-up line that says so.

The order, for `policies` and `prompts` alike: the setting when it is given (TEXTBACK_POLICIES_DIR,
TEXTBACK_PROMPTS_DIR); else the working directory's own `./policies` or `./prompts`; else the copies shipped
with textback. The wheel carries them as package data in service/shipped/ (pyproject.toml force-includes the
repository's policies/, prompts/ and brokers.example.yaml there); a source checkout uses its root's folders.
Both copies hold the same files under a folder of the same name, so the policy-set version
(service.policy.files.policy_version: relative paths and bytes) is the same for either.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE_DIR / "shipped"  # inside an installed wheel
CHECKOUT_DIR = PACKAGE_DIR.parent  # a source checkout (or an editable install of one)
EXAMPLE_BROKERS = "brokers.example.yaml"


def shipped(name: str) -> Path:
    """The copy of `name` (policies, prompts, brokers.example.yaml) shipped with textback: the package data of
    an installed wheel, else the root of the source checkout this module runs from."""
    inside = SHIPPED_DIR / name
    if inside.exists() or not (CHECKOUT_DIR / "pyproject.toml").is_file():
        return inside
    return CHECKOUT_DIR / name


def is_package_data(path: Path) -> bool:
    """Whether `path` is inside the installed package's shipped copies (replaced by every upgrade: never edited
    or approved in place; `textback policies export` makes an editable copy)."""
    return path.resolve().is_relative_to(SHIPPED_DIR)


def default_dir(name: str) -> Path:
    """The folder used when its setting is not given: `./name` when the working directory has one (kept
    relative, as a person would type it), else the shipped copy."""
    local = Path(name)
    return local if local.is_dir() else shipped(name)


def textback_version() -> str:
    try:
        return metadata.version("textback")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def describe(name: str, path: Path, *, explicit: bool) -> str:
    """One line saying which copy of `name` is used and why, e.g. `policies: ./policies (working directory)`."""
    if explicit:
        return f"{name}: {path} (TEXTBACK_{name.upper()}_DIR)"
    if path == Path(name):
        return f"{name}: ./{name} (working directory)"
    if path == shipped(name):
        return f"{name}: shipped with textback {textback_version()} ({path})"
    return f"{name}: {path}"


def startup_lines(settings: Settings) -> list[str]:
    """What start-up prints about the policies and prompts it uses (and the demo brokers, when it uses them)."""
    lines = [
        describe("policies", settings.policies_dir, explicit="policies_dir" in settings.model_fields_set),
        describe("prompts", settings.prompts_dir, explicit="prompts_dir" in settings.model_fields_set),
    ]
    brokers = settings.resolved_brokers_file()
    if brokers.name == EXAMPLE_BROKERS:
        lines.append(f"brokers: {brokers} (the demo brokers: dry-run only; set TEXTBACK_BROKERS_FILE or write "
                     "brokers.yaml)")
    return lines
