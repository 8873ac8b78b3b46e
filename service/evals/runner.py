"""Run the eval sets: every labelled reply through the rules (and the LLM when asked), every red-team text
through the output guard, then score and hold the result against the thresholds.

    result = run(RunConfig(data_dir=Path("evals"), policies_dir=Path("policies"), llm="none"))
    result.broken    # one line per broken threshold; empty when CI should pass

LLM modes: ``none`` runs the rules only. ``live`` calls the endpoint configured by OPENAI_API_KEY,
OPENAI_BASE_URL and TEXTBACK_LLM_MODEL (each call bounded by TEXTBACK_LLM_TIMEOUT_SECONDS) and records every
exchange to ``<data>/cassettes/<name>.jsonl``. The prompt comes from TEXTBACK_PROMPTS_DIR when it is set
(else the repository's prompts/), as in the service; it is part of every request, so a replay needs the
prompt the cassette was recorded with.
``replay`` answers from that cassette only; an unrecorded request stops the run (`CassetteError`), and with
no cassette the run is skipped (``result.skipped`` says why). Nothing here logs borrower text.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from service.evals.cassette import CassetteError, RecordingTransport, ReplayTransport, read_header
from service.evals.datasets import (
    OUTBOUND_FILE,
    REPLIES_FILE,
    OutboundCase,
    ReplyCase,
    load_outbound_cases,
    load_reply_cases,
)
from service.evals.metrics import (
    GuardOutcome,
    GuardReport,
    RepliesReport,
    ReplyOutcome,
    plain,
    score_guard,
    score_replies,
)
from service.evals.render import ConversationReport, broken_lines
from service.evals.scripts import CONVERSATIONS_DIR
from service.evals.thresholds import Thresholds, broken, load_thresholds
from service.policy.files import policy_version
from service.policy.guard import OutputGuard  # cheap: guardrails is imported by OutputGuard.load only
from service.replies.classify import build_extractor, classify
from service.replies.rules import RuleSet, load_rules

if TYPE_CHECKING:
    import httpx

    from service.replies.llm import ReplyExtractor

logger = logging.getLogger("textback.evals")

LLMMode = Literal["none", "replay", "live"]
DEFAULT_CASSETTE = "replies"
REPLAY_API_KEY = "replay-only-no-key"  # never leaves the process: the replay transport answers every call


class EvalConfigError(Exception):
    """The run cannot start (e.g. `live` without an API key or a model)."""


@dataclass
class RunConfig:
    data_dir: Path
    policies_dir: Path
    llm: LLMMode = "none"
    thresholds_path: Path | None = None  # default: <data_dir>/thresholds.yaml
    cassette: str = DEFAULT_CASSETTE
    environ: Mapping[str, str] = field(default_factory=dict)
    run_guard: bool = True
    # The multi-turn scripts in <data_dir>/conversations/ (rules only, whatever `llm` says); skipped when the
    # directory does not exist. `textback evals run` turns this on unless --no-conversations.
    run_conversations: bool = False

    @property
    def cassette_path(self) -> Path:
        return self.data_dir / "cassettes" / f"{self.cassette}.jsonl"


@dataclass
class RunResult:
    config: RunConfig
    thresholds: Thresholds
    replies: RepliesReport | None = None
    guard: GuardReport | None = None
    conversations: ConversationReport | None = None
    outcomes: list[ReplyOutcome] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    skipped: str | None = None
    llm_model: str | None = None
    policy_version: str | None = None  # the policy-set version the rules and the guard were read from
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.skipped is not None or not self.broken


def _prompts_dir(config: RunConfig) -> Path | None:
    value = (config.environ.get("TEXTBACK_PROMPTS_DIR") or "").strip()
    return Path(value) if value else None


def _timeout_s(config: RunConfig) -> float:
    value = (config.environ.get("TEXTBACK_LLM_TIMEOUT_SECONDS") or "").strip()
    if not value:
        return 8.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise EvalConfigError(f"TEXTBACK_LLM_TIMEOUT_SECONDS must be a positive number of seconds, got {value!r}")
    return seconds


def _extractor(
    config: RunConfig,
) -> tuple[ReplyExtractor | None, ReplayTransport | RecordingTransport | None, httpx.AsyncClient | None]:
    if config.llm == "none":
        return None, None, None
    import httpx  # lazy: only the LLM modes need it

    if config.llm == "replay":
        transport: ReplayTransport | RecordingTransport = ReplayTransport(config.cassette_path)
        header = read_header(config.cassette_path)
        client = httpx.AsyncClient(transport=transport)
        extractor = build_extractor(
            api_key=REPLAY_API_KEY, base_url=header.base_url, model=header.model, http_client=client,
            timeout_s=_timeout_s(config), prompts_dir=_prompts_dir(config),
        )
        return extractor, transport, client

    api_key = (config.environ.get("OPENAI_API_KEY") or "").strip()
    model = (config.environ.get("TEXTBACK_LLM_MODEL") or "").strip()
    if not api_key or not model:
        raise EvalConfigError(
            "--llm live needs OPENAI_API_KEY and TEXTBACK_LLM_MODEL (and OPENAI_BASE_URL when not OpenAI's)"
        )
    from service.replies.llm import (
        DEFAULT_OPENAI_BASE_URL,  # lazy: imports openai (~1 s); only --llm live needs it
    )

    base_url = (config.environ.get("OPENAI_BASE_URL") or "").strip() or DEFAULT_OPENAI_BASE_URL
    timeout_s, prompts_dir = _timeout_s(config), _prompts_dir(config)
    transport = RecordingTransport(
        config.cassette_path, inner=httpx.AsyncHTTPTransport(), base_url=base_url, model=model
    )
    client = httpx.AsyncClient(transport=transport)
    extractor = build_extractor(api_key=api_key, base_url=base_url, model=model, http_client=client,
                                timeout_s=timeout_s, prompts_dir=prompts_dir)
    return extractor, transport, client


def run_replies(
    cases: list[ReplyCase],
    rules: RuleSet,
    extractor: ReplyExtractor | None = None,
    replay: ReplayTransport | None = None,
) -> list[ReplyOutcome]:
    """Each case through the rules alone, and through `classify` when an extractor is given."""
    outcomes: list[ReplyOutcome] = []
    for case in cases:
        by_rules = rules.analyze(case.text, case.received_at)
        final = by_rules
        if extractor is not None:
            final = classify(case.text, case.received_at, rules=rules, extractor=extractor)
            if replay is not None and replay.misses:
                raise CassetteError(
                    f"{replay.path.name}: case {case.id} made a request the cassette never recorded; "
                    "replay answers only what a live run recorded (re-record with --llm live)"
                )
        # `by_rules` itself is kept: whether the rules alone hand the reply to a person needs its `unsure`.
        outcomes.append(
            ReplyOutcome(case, plain(by_rules), plain(final), by_rules.needs_llm, final.llm_error, by_rules)
        )
    return outcomes


def run_guard(
    cases: list[OutboundCase], policies_dir: Path, guard: OutputGuard | None = None
) -> tuple[list[GuardOutcome], str]:
    if guard is None:
        guard = OutputGuard.load(policies_dir)
    outcomes = []
    for case in cases:
        result = guard.check(case.text)
        outcomes.append(GuardOutcome(case, result.allowed, tuple(v.rule for v in result.violations)))
    return outcomes, policy_version(policies_dir)


def run(config: RunConfig) -> RunResult:
    """The whole suite. Raises DatasetError, ThresholdError, PolicyError, CassetteError or EvalConfigError."""
    thresholds = load_thresholds(config.thresholds_path or config.data_dir / "thresholds.yaml")
    result = RunResult(config=config, thresholds=thresholds)
    if config.llm == "replay" and not config.cassette_path.exists():
        result.skipped = (
            f"--llm replay skipped: no cassette at {config.cassette_path} "
            "(only a live run records one: textback evals run --llm live)"
        )
        return result

    started = time.perf_counter()
    cases = load_reply_cases(config.data_dir / REPLIES_FILE)
    outbound = load_outbound_cases(config.data_dir / OUTBOUND_FILE) if config.run_guard else []
    rules = load_rules(config.policies_dir)
    result.policy_version = policy_version(config.policies_dir)
    extractor, transport, _client = _extractor(config)
    result.llm_model = extractor.model if extractor is not None else None
    try:
        result.outcomes = run_replies(
            cases, rules, extractor, transport if isinstance(transport, ReplayTransport) else None
        )
    finally:
        if extractor is not None:
            extractor.close()  # closes `_client` too, on the extractor's event loop
    result.seconds["replies"] = time.perf_counter() - started
    result.replies = score_replies(result.outcomes)
    logger.info(
        "evals replies scored",
        extra={"fields": {"cases": len(cases), "llm": config.llm, "failed_ids": result.replies.failed_ids}},
    )

    conversations_dir = config.data_dir / CONVERSATIONS_DIR
    with_conversations = config.run_conversations and conversations_dir.is_dir()
    guard = None
    if config.run_guard or with_conversations:
        started = time.perf_counter()
        guard = OutputGuard.load(config.policies_dir)  # built once, shared by both sets
        result.seconds["guard load"] = time.perf_counter() - started
    if config.run_guard:
        started = time.perf_counter()
        guard_outcomes, _ = run_guard(outbound, config.policies_dir, guard)
        result.seconds["guard"] = time.perf_counter() - started
        result.guard = score_guard(guard_outcomes)

    result.broken = broken(thresholds, result.replies, result.guard)
    if with_conversations:
        from service.evals.driver import run_conversations  # lazy: imports the app only when the set runs

        report = run_conversations(conversations_dir, config.policies_dir, guard=guard)
        result.conversations = report
        result.seconds["conversations"] = report.seconds
        floors = thresholds.conversations
        result.broken += broken_lines(report, floors.scripts_min, floors.failed_max)
    return result
