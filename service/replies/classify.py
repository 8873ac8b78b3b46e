"""Rules first, the LLM only where the rules could not settle a reply, and one merged `ReplyAnalysis`.

How the two combine (`merge`): the LLM may only move a reply toward a person or toward stopping.

- A field the rules set is final. The LLM only fills what the rules left unknown: `loan_type` and `timeline`
  when `unknown`, `applied_elsewhere` when null.
- Handoff reasons are a union: the LLM may add any reason, `rate_lock`, `closing`, `deadline` and
  `transaction_issue` included (and `callback_requested` adds `human_request`), but never removes one.
- An LLM `opt_out_request` becomes `keyword=stop`, whatever keyword the rules found (a `start` or `help` the
  rules read gives way to the stop). Since 2025 the FCC requires honouring a revocation made "by any
  reasonable means", and the mistake it risks is one fewer text, never an unwanted one. The LLM can never set
  `start` or `help`, and never clears a rules `stop`.
- `wrong_number` and `not_interested` can only be turned on by the LLM, never off, and not at all when the
  rules found a handoff reason: the LLM never closes a lead the rules handed to a person.
- `callback_window` is rules-only (the model produces no free text).
- `source` says who produced what the caller sees: `rules+llm` when both contributed a field, `llm` when only
  the LLM did, `rules` when the LLM added nothing (that it was consulted still shows in `llm_model`).
- `needs_llm` and `rules_fired` stay as the rules set them: they describe the rules pass.

Whenever the LLM was consulted, `llm_prompt`, `llm_prompt_version` (version+content hash) and `llm_model` are
recorded. On `LLMFailure` the rules' result is kept as it is, with `llm_error` set to the failure's reason;
the conversation hands a reply with `llm_error` to a person (service.conversation): nothing is guessed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, get_args

from service.prompts import PROMPTS_DIR
from service.replies.analysis import (
    FieldName,
    HandoffReason,
    Keyword,
    LoanType,
    ReplyAnalysis,
    Source,
    Timeline,
)
from service.replies.extraction import LLMExtraction, LLMFailure

if TYPE_CHECKING:  # the openai SDK costs ~1.5 s to import; rules-only callers never pay it
    from pathlib import Path

    import httpx

    from service.replies.llm import ReplyExtractor

DEFAULT_LLM_MODEL = "gpt-4o-mini"

# The fields that carry what a reply says (as opposed to provenance: source, needs_llm, rules_fired, llm_*):
# every field a rule can set, except `needs_llm` (which describes the rules pass).
CONTENT_FIELDS: tuple[str, ...] = tuple(name for name in get_args(FieldName) if name != "needs_llm")


class RulesAnalyzer(Protocol):
    """What classify needs from the rules layer (`service.replies.rules.RuleSet`)."""

    def analyze(self, text: str, received_at: datetime) -> ReplyAnalysis: ...


def classify(
    text: str,
    received_at: datetime,
    *,
    rules: RulesAnalyzer,
    extractor: ReplyExtractor | None,
) -> ReplyAnalysis:
    """Analyse one reply: the rules, then the LLM only when the rules ask for it and one is configured."""
    analysis = rules.analyze(text, received_at)
    if not analysis.needs_llm or extractor is None:
        return analysis

    consulted = analysis.model_copy(
        update={
            "llm_prompt": extractor.prompt_name,
            "llm_prompt_version": extractor.prompt_version,
            "llm_model": extractor.model,
        }
    )
    try:
        extraction = extractor.extract(text, received_at)
    except LLMFailure as failure:
        return consulted.model_copy(update={"llm_error": failure.reason})
    return merge(consulted, extraction)


def merge(rules: ReplyAnalysis, llm: LLMExtraction) -> ReplyAnalysis:
    """Combine a rules analysis with the LLM's extraction: the LLM only adds (see the module docstring)."""
    keyword = Keyword.STOP if llm.opt_out_request else rules.keyword

    handoff = list(rules.handoff_reasons)
    proposed = [HandoffReason(reason) for reason in llm.handoff_reasons]
    if llm.callback_requested:
        proposed.append(HandoffReason.HUMAN_REQUEST)
    for reason in proposed:
        if reason not in handoff:
            handoff.append(reason)
    # A lead the rules handed to a person is never closed on the LLM's word.
    may_close = not rules.handoff_reasons

    merged = rules.model_copy(
        update={
            "keyword": keyword,
            "loan_type": rules.loan_type if rules.loan_type is not LoanType.UNKNOWN else llm.loan_type,
            "timeline": rules.timeline if rules.timeline is not Timeline.UNKNOWN else llm.timeline,
            "applied_elsewhere": (
                rules.applied_elsewhere if rules.applied_elsewhere is not None else llm.applied_elsewhere
            ),
            "wrong_number": rules.wrong_number or (may_close and llm.wrong_number),
            "not_interested": rules.not_interested or (may_close and llm.not_interested),
            "handoff_reasons": handoff,
        }
    )
    rules_settled = bool(_settled(rules))
    llm_added = any(getattr(merged, name) != getattr(rules, name) for name in CONTENT_FIELDS)
    if llm_added:
        source = Source.RULES_LLM if rules_settled else Source.LLM
    else:
        source = Source.RULES
    return merged.model_copy(update={"source": source})


def _settled(analysis: ReplyAnalysis) -> list[str]:
    """The content fields that differ from an empty analysis."""
    empty = ReplyAnalysis()
    return [name for name in CONTENT_FIELDS if getattr(analysis, name) != getattr(empty, name)]


def build_extractor(
    *,
    api_key: str | None,
    base_url: str | None = None,
    model: str | None = None,
    timeout_s: float = 8.0,
    max_retries: int = 1,
    http_client: httpx.AsyncClient | None = None,
    prompts_dir: Path | None = None,
) -> ReplyExtractor | None:
    """The LLM extractor for these settings, or None (rules only) when there is no API key.

    The caller reads its own configuration (environment, settings) and passes the values here;
    `http_client` is the seam for record/replay (eval cassettes) and tests. `prompts_dir` defaults to the
    repository's prompts/. A prompt that does not load or disagrees with the output schema raises PromptError.
    """
    if api_key is None or not api_key.strip():
        return None
    from service.replies.llm import ReplyExtractor  # lazy: keep rules-only start-up fast

    return ReplyExtractor(
        api_key=api_key.strip(),
        base_url=(base_url or "").strip() or None,
        model=(model or "").strip() or DEFAULT_LLM_MODEL,
        timeout_s=timeout_s,
        max_retries=max_retries,
        http_client=http_client,
        prompts_dir=prompts_dir or PROMPTS_DIR,
    )
