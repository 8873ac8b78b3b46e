"""The SDK's lazy parse path is run when the first extractor is built, not inside the first reply's deadline.

Checked by what a first call does (which modules it imports), never by how long it takes: a count holds on a
loaded machine where a time does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import respx

import service.replies.llm as llm
from service.replies.llm import ReplyExtractor
from service.replies.llm_fake import completion_json
from tests.test_reply_llm import BASE_URL, COMPLETIONS, GOOD_ANSWER, RECEIVED, TEXT, answer

ROOT = Path(__file__).resolve().parent.parent

FIRST_CALL = f"""
import json, sys
import respx
from service.replies.llm import ReplyExtractor
from service.replies.llm_fake import completion_json
extractor = ReplyExtractor(api_key="sk-test-not-a-real-key", base_url={BASE_URL!r}, model="gpt-4o-mini",
                           timeout_s=8.0, max_retries=0)
with respx.mock(assert_all_called=True) as mock:
    mock.post({COMPLETIONS!r}).respond(200, json=completion_json({answer()!r}))
    before = set(sys.modules)
    extraction = extractor.extract({TEXT!r}, __import__("datetime").datetime(2025, 11, 14, 17, 5))
    imported = sorted(set(sys.modules) - before)
extractor.close()
print(json.dumps({{"imported": imported, "loan_type": extraction.loan_type}}))
"""


def test_first_extraction_in_a_process_imports_nothing() -> None:
    """In a fresh process, the first reply's call imports no module: the extractor's construction did."""
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loan_type"] == GOOD_ANSWER["loan_type"]
    assert result["imported"] == []


def test_build_extractor_warm_up_failure_logged_and_extraction_still_works(
    monkeypatch: pytest.MonkeyPatch, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture,
) -> None:
    """A warm-up that fails does not stop the extractor being built; the next build tries again."""
    async def broken(model: str) -> object:
        raise RuntimeError("sdk changed")

    monkeypatch.setattr(llm, "_warmed", threading.Event())
    monkeypatch.setattr(llm, "_parse_canned", broken)
    extractor = ReplyExtractor(api_key="sk-test-not-a-real-key", base_url=BASE_URL, model="gpt-4o-mini",
                               timeout_s=8.0, max_retries=0)
    try:
        assert "llm warm-up failed" in caplog.text
        assert not llm._warmed.is_set()
        route = respx_mock.post(COMPLETIONS).respond(200, json=completion_json(answer()))
        assert extractor.extract(TEXT, RECEIVED).timeline == GOOD_ANSWER["timeline"]
        assert route.call_count == 1
    finally:
        extractor.close()


def test_build_extractor_warm_up_sends_nothing_to_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, respx_mock: respx.MockRouter,
) -> None:
    """The warm-up's canned answer comes from an in-process transport: no request reaches any endpoint."""
    monkeypatch.setattr(llm, "_warmed", threading.Event())
    route = respx_mock.route().respond(500)
    extractor = ReplyExtractor(api_key="sk-test-not-a-real-key", base_url=BASE_URL, model="gpt-4o-mini",
                               timeout_s=8.0, max_retries=0)
    try:
        assert llm._warmed.is_set()
        assert route.call_count == 0
    finally:
        extractor.close()
