"""The built wheel, installed into a fresh virtual environment, runs the service from an empty directory.

Without network: `uv build --wheel --offline` builds it with hatchling from uv's cache (there since `uv sync`
built the project's editable install with it); `uv sync --frozen --offline --no-dev --no-install-project` into a
new environment installs exactly the locked runtime dependencies from the same cache (`uv pip install
--offline` of an exported requirements file cannot: it revalidates registry wheels over HTTP); then the wheel
alone (`--no-deps`) and `uv pip check` proves its declared dependencies are met. From an empty directory:
`textback serve` in dry-run answers a signed missed call with the demo brokers and shipped policies and texts the
opener; `textback policies export` and `policy check` on the export pass.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from service.policy.files import policy_version
from service.settings import DEV_AUTH_TOKEN
from service.twilio.fake import call_form, dial_status_form, random_sid, signature_headers
from tests.helpers import POLICIES, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BROKER = "+14155550100"  # brokers.example.yaml's broker: the demo brokers an empty directory runs with
BROKER_CELL = "+14155550111"
CALLER = "+14155550177"
START_TIMEOUT = 300.0  # first start: guardrails' import and the guard's self-test, no cache yet, on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without settings, virtual environment or Python path, offline for uv."""
    drop = ("TEXTBACK_", "TWILIO_", "OPENAI_", "VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "UV_OFFLINE": "1", **extra}


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, float]]:
    """(the fresh environment's bin folder, the wheel, seconds per step)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: the wheel is built and installed with uv")
    root = tmp_path_factory.mktemp("wheel")
    timings: dict[str, float] = {}
    started = time.monotonic()
    run([uv, "build", "--wheel", "--offline", "--out-dir", str(root / "dist")], REPO, clean_env())
    timings["build"] = time.monotonic() - started
    (wheel,) = (root / "dist").glob("textback-*.whl")
    started = time.monotonic()
    venv = root / "venv"
    run([uv, "sync", "--frozen", "--offline", "--no-dev", "--no-install-project", "--quiet"], REPO,
        clean_env(UV_PROJECT_ENVIRONMENT=str(venv)))
    python = venv / "bin" / "python"
    run([uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)], root, clean_env())
    run([uv, "pip", "check", "--python", str(python)], root, clean_env())
    timings["install"] = time.monotonic() - started
    return venv / "bin", wheel, timings


def test_carry_policies_prompts_and_demo_brokers_in_wheel(installed) -> None:
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    policies = {f"service/shipped/policies/{p.relative_to(POLICIES).as_posix()}" for p in POLICIES.rglob("*")
                if p.is_file()}
    assert policies <= names
    assert {"service/shipped/prompts/reply_extraction.md", "service/shipped/brokers.example.yaml"} <= names


def twiml(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.text)


def post_signed(url: str, path: str, form: dict[str, str]) -> httpx.Response:
    headers = signature_headers(token=DEV_AUTH_TOKEN, public_url=url, path=path, form=form)
    return httpx.post(url + path, data=form, headers=headers, timeout=30)


def wait_for(predicate, what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def test_serve_from_empty_directory_with_shipped_policies(installed, tmp_path) -> None:
    bin_dir, _, timings = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(bin_dir / "textback"), "serve", "--port", str(port)], cwd=empty,
                                env=clean_env(TEXTBACK_PUBLIC_URL=url), stdout=out, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"textback serve exited {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                return httpx.get(url + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, "no /ready", log, START_TIMEOUT)
        timings["start"] = time.monotonic() - started
        said = log.read_text()
        site = bin_dir.parent / "lib"
        assert re.search(rf"^policies: shipped with textback 0\.1\.0 \({re.escape(str(site))}/python[\d.]+/"
                         r"site-packages/service/shipped/policies\)$", said, re.MULTILINE), said
        assert re.search(r"^prompts: shipped with textback .*/site-packages/service/shipped/prompts\)$", said,
                         re.MULTILINE), said
        assert f"policy set {policy_version(POLICIES)}" in said  # the shipped copy is the checkout's version
        call_sid = random_sid("CA")
        dial = twiml(post_signed(url, "/twilio/voice", call_form(call_sid, CALLER, BROKER))).find("Dial")
        assert dial is not None
        number = dial.find("Number")
        assert number is not None
        assert number.text == BROKER_CELL
        answer = twiml(post_signed(url, "/twilio/voice/dial-status",
                                   dial_status_form(call_sid, CALLER, BROKER, "no-answer")))
        assert answer.tag == "Response"
        wait_for(lambda: f"[dry-run] text to {CALLER} from {BROKER} (opener" in log.read_text(errors="replace"),
                 "no opener printed", log, 60)
        assert list((empty / "var" / "guard-cache").glob("*.json"))  # the guard's self-test was recorded
        assert (empty / "var" / "textback.db").exists()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"wheel timings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}")


def test_export_policies_from_installed_wheel_and_check_them(installed, tmp_path) -> None:
    bin_dir, _, _ = installed
    exported = run([str(bin_dir / "textback"), "policies", "export", "compliance"], tmp_path, clean_env())
    assert exported.stdout.splitlines()[0].startswith("wrote ")
    assert policy_version(tmp_path / "compliance" / "policies") == policy_version(POLICIES)
    checked = run([str(bin_dir / "textback"), "policy", "check"], tmp_path,
                  clean_env(TEXTBACK_POLICIES_DIR="compliance/policies"))
    assert any(line.startswith("policy check: ok: ") for line in checked.stdout.splitlines()), checked.stdout
    assert f"policy set {policy_version(POLICIES)}" in checked.stdout


def test_refuse_approving_installed_policies(installed, tmp_path) -> None:
    """From an empty directory `policy approve` would sign the copy inside site-packages: refused, pointing to
    an export."""
    bin_dir, _, _ = installed
    done = subprocess.run([str(bin_dir / "textback"), "policy", "approve", "--reviewer", "Ana Ortiz, CCO"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "site-packages/service/shipped/policies is the copy installed with textback" in done.stderr
    assert "textback policies export DIR" in done.stderr
