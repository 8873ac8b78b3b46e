"""Where the policies, prompts and demo brokers come from (the setting, else ./policies, else the shipped copy),
what start-up says about it, and `textback policies export`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service import resources
from service.policy.cli import policy
from service.policy.files import policy_version
from service.settings import Settings
from tests.helpers import POLICIES, REPO, TWILIO_SID, TWILIO_TOKEN

SETTINGS_ENV = ("TEXTBACK_", "TWILIO_", "OPENAI_")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and an environment without any textback, Twilio or OpenAI setting."""
    for name in list(os.environ):
        if name.startswith(SETTINGS_ENV):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def textback(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`textback ARGS` as a subprocess in `cwd`, with no setting from the parent's environment but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_ENV)}
    script = Path(sys.executable).with_name("textback")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
    return subprocess.run([*command, *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize(
    ("local", "setting", "expected", "says"),
    [
        # the working directory has its own folder, and a setting names another: the setting wins
        (True, "elsewhere", "elsewhere", "{name}: elsewhere (TEXTBACK_{NAME}_DIR)"),
        # no setting: the working directory's own folder, kept relative as a person types it
        (True, None, "{name}", "{name}: ./{name} (working directory)"),
        # neither: the copy shipped with textback (in a checkout: the repository's own folder)
        (False, None, "shipped", "{name}: shipped with textback {version} ({shipped})"),
    ],
    ids=["setting", "working-directory", "shipped"],
)
@pytest.mark.parametrize("name", ["policies", "prompts"])
def test_resolve_folder_by_setting_then_working_directory_then_shipped(
    workdir, monkeypatch, name, local, setting, expected, says
) -> None:
    if local:
        (workdir / name).mkdir()
    if setting is not None:
        monkeypatch.setenv(f"TEXTBACK_{name.upper()}_DIR", setting)
    settings = Settings()
    shipped = resources.shipped(name)
    want = shipped if expected == "shipped" else Path(expected.format(name=name))
    assert getattr(settings, f"{name}_dir") == want
    line = says.format(name=name, NAME=name.upper(), version=resources.textback_version(), shipped=shipped)
    assert line in resources.startup_lines(settings)


def test_find_shipped_copies_in_checkout_when_package_has_no_data() -> None:
    """A checkout (or an editable install) has no service/shipped/: its root's folders are the shipped ones."""
    assert not resources.SHIPPED_DIR.exists()
    assert resources.shipped("policies") == POLICIES
    assert resources.shipped("prompts") == REPO / "prompts"
    assert resources.shipped("brokers.example.yaml") == REPO / "brokers.example.yaml"


def test_prefer_package_data_when_installed_from_wheel(tmp_path, monkeypatch) -> None:
    data = tmp_path / "site-packages" / "service" / "shipped"
    (data / "policies").mkdir(parents=True)
    monkeypatch.setattr(resources, "SHIPPED_DIR", data)
    assert resources.shipped("policies") == data / "policies"


def test_use_package_data_path_outside_checkout_even_when_missing(tmp_path, monkeypatch) -> None:
    """Outside a checkout a broken install names its own package data, never a folder next to site-packages."""
    package = tmp_path / "site-packages" / "service"
    (tmp_path / "site-packages" / "policies").mkdir(parents=True)  # some other distribution's folder
    monkeypatch.setattr(resources, "SHIPPED_DIR", package / "shipped")
    monkeypatch.setattr(resources, "CHECKOUT_DIR", package.parent)
    assert resources.shipped("policies") == package / "shipped" / "policies"


def test_use_shipped_demo_brokers_in_dry_run_from_empty_directory(workdir) -> None:
    settings = Settings()
    assert settings.dry_run
    assert settings.resolved_brokers_file() == REPO / "brokers.example.yaml"
    assert any(line.startswith("brokers: ") and "demo brokers: dry-run only" in line
               for line in resources.startup_lines(settings))


def test_prefer_working_directory_example_brokers_in_dry_run(workdir) -> None:
    (workdir / "brokers.example.yaml").write_text("brokers: []\n", encoding="utf-8")
    assert Settings().resolved_brokers_file() == Path("brokers.example.yaml")


def test_prefer_brokers_yaml_over_any_example(workdir) -> None:
    (workdir / "brokers.yaml").write_text("brokers: []\n", encoding="utf-8")
    (workdir / "brokers.example.yaml").write_text("brokers: []\n", encoding="utf-8")
    settings = Settings()
    assert settings.resolved_brokers_file() == Path("brokers.yaml")
    assert not any(line.startswith("brokers: ") for line in resources.startup_lines(settings))


@pytest.mark.parametrize("example_here", [True, False], ids=["example-in-working-directory", "empty-directory"])
def test_never_use_example_brokers_in_live_mode(workdir, example_here) -> None:
    if example_here:
        (workdir / "brokers.example.yaml").write_text((REPO / "brokers.example.yaml").read_text("utf-8"), "utf-8")
    settings = Settings(twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN)
    assert not settings.dry_run
    assert settings.resolved_brokers_file() == Path("brokers.yaml")


def test_refuse_live_serve_without_brokers_file_even_beside_the_example(tmp_path) -> None:
    """Live mode with only brokers.example.yaml at hand stops start-up naming brokers.yaml; it never texts
    from the demo brokers."""
    (tmp_path / "brokers.example.yaml").write_text((REPO / "brokers.example.yaml").read_text("utf-8"), "utf-8")
    run = textback("serve", "--port", "9", cwd=tmp_path, env={
        "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TEXTBACK_PUBLIC_URL": "https://textback.example.com", "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
    })
    assert run.returncode != 0
    assert "brokers.yaml: brokers file not found" in run.stderr
    assert "textback on http" not in run.stderr


def test_export_shipped_policies_and_prompts_for_compliance(tmp_path) -> None:
    run = textback("policies", "export", "review", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "review"
    shipped = {p.relative_to(POLICIES) for p in POLICIES.rglob("*") if p.is_file()}
    assert {p.relative_to(out / "policies") for p in (out / "policies").rglob("*") if p.is_file()} == shipped
    assert (out / "prompts" / "reply_extraction.md").read_bytes() == (REPO / "prompts/reply_extraction.md").read_bytes()
    version = policy_version(POLICIES)
    assert policy_version(out / "policies") == version  # same files, same policy-set version
    lines = run.stdout.splitlines()
    assert lines[0] == (f"wrote {len(shipped)} files to review/policies (policy set {version}, as shipped with "
                        f"textback {resources.textback_version()})")
    assert lines[1] == "wrote 1 file to review/prompts"
    assert "TEXTBACK_POLICIES_DIR=review/policies textback policy check" in lines[2]


def test_refuse_export_into_non_empty_folder_without_force(tmp_path) -> None:
    edited = tmp_path / "review" / "policies" / "outbound" / "rates.yaml"
    edited.parent.mkdir(parents=True)
    edited.write_text("a compliance team's edit\n", encoding="utf-8")
    run = textback("policies", "export", "review", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        "policies export: refused: review/policies is not empty; pass --force to overwrite the files textback "
        "ships there (other files are kept)"
    ]
    assert edited.read_text(encoding="utf-8") == "a compliance team's edit\n"
    assert not (tmp_path / "review" / "prompts").exists()


def test_overwrite_shipped_files_and_keep_others_with_force(tmp_path) -> None:
    policies = tmp_path / "review" / "policies"
    (policies / "outbound").mkdir(parents=True)
    (policies / "outbound" / "rates.yaml").write_text("an edit\n", encoding="utf-8")
    (policies / "approvals.yaml").write_text("approvals: []\n", encoding="utf-8")
    run = textback("policies", "export", "review", "--force", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (policies / "outbound" / "rates.yaml").read_bytes() == (POLICIES / "outbound" / "rates.yaml").read_bytes()
    assert (policies / "approvals.yaml").read_text(encoding="utf-8") == "approvals: []\n"
    assert "  kept review/policies/approvals.yaml (not shipped)" in run.stdout.splitlines()


def test_refuse_export_when_target_is_a_file(tmp_path) -> None:
    (tmp_path / "review").write_text("", encoding="utf-8")
    run = textback("policies", "export", "review", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip() == "policies export: refused: review is a file, not a folder"


def test_refuse_policy_check_when_policies_setting_names_no_folder(tmp_path) -> None:
    run = textback("policy", "check", cwd=tmp_path, env={"TEXTBACK_POLICIES_DIR": "nowhere"})
    assert run.returncode == 1
    assert run.stderr.strip() == "Error: nowhere: no such policies folder (TEXTBACK_POLICIES_DIR)"


def test_refuse_approving_the_installed_copy(tmp_path, monkeypatch) -> None:
    """An approval written into site-packages would vanish with the next upgrade: approve an exported copy."""
    data = tmp_path / "site-packages" / "service" / "shipped"
    shutil.copytree(POLICIES, data / "policies")
    monkeypatch.setattr(resources, "SHIPPED_DIR", data)
    result = CliRunner().invoke(policy, ["approve", "--reviewer", "Ana Ortiz, CCO", "--policies",
                                         str(data / "policies")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"policy approve: refused: {data / 'policies'} is the copy installed with textback (an upgrade replaces "
        "it); approve an editable copy: textback policies export DIR, then TEXTBACK_POLICIES_DIR=DIR/policies "
        'textback policy approve --reviewer "NAME, ROLE"'
    )
    assert not (data / "policies" / "approvals.yaml").exists()
