"""The analysis of one borrower reply: the same typed result from the service, the CLI and the evals."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


class LoanType(StrEnum):
    PURCHASE = "purchase"
    REFINANCE = "refinance"
    HOME_EQUITY = "home_equity"
    OTHER = "other"
    UNKNOWN = "unknown"


class Timeline(StrEnum):
    UNDER_30_DAYS = "under_30_days"
    ONE_TO_THREE_MONTHS = "1_to_3_months"
    THREE_TO_SIX_MONTHS = "3_to_6_months"
    OVER_SIX_MONTHS = "over_6_months"
    RESEARCHING = "researching"
    UNKNOWN = "unknown"


class HandoffReason(StrEnum):
    RATE_LOCK = "rate_lock"
    CLOSING = "closing"
    DEADLINE = "deadline"
    RATE_OR_TERMS = "rate_or_terms"
    PREAPPROVAL = "preapproval"
    HUMAN_REQUEST = "human_request"
    COMPLAINT = "complaint"
    TRANSACTION_ISSUE = "transaction_issue"  # trouble with an appraisal, underwriting, a contract or a title
    EXISTING_LOAN = "existing_loan"  # a client already, or a loan they pay now: payment, escrow, payoff, behind


class Unsure(StrEnum):
    """What the rules could not settle (``ReplyAnalysis.unsure``): a safety category or a plain field."""

    SAFETY = "safety"  # words near an opt-out, a rate lock, a closing or a deadline that no rule settled
    LOAN_TYPE = "loan_type"
    TIMELINE = "timeline"
    APPLIED_ELSEWHERE = "applied_elsewhere"
    CONTENT = "content"  # something was said and no rule read any of it


class Source(StrEnum):
    RULES = "rules"
    LLM = "llm"
    RULES_LLM = "rules+llm"


# The fields of ReplyAnalysis a rule (``sets: {field: ...}``) can set; service.replies.classify derives the
# content fields from it.
FieldName = Literal[
    "keyword",
    "loan_type",
    "timeline",
    "applied_elsewhere",
    "wrong_number",
    "not_interested",
    "handoff_reasons",
    "callback_window",
    "needs_llm",
]


class ReplyAnalysis(BaseModel):
    """Everything the service needs to know about one inbound reply.

    `rules_fired` names the policy rule ids that matched (the audit trail); `llm_*` are set only when the LLM
    was consulted, and `llm_error` when that consultation failed (which always means a human takes the lead).
    `needs_llm` is true exactly when `unsure` names something: what the rules could not settle.
    """

    model_config = ConfigDict(extra="forbid")

    keyword: Keyword | None = None
    loan_type: LoanType = LoanType.UNKNOWN
    timeline: Timeline = Timeline.UNKNOWN
    applied_elsewhere: bool | None = None
    wrong_number: bool = False
    not_interested: bool = False
    handoff_reasons: list[HandoffReason] = Field(default_factory=list)
    callback_window: str | None = None
    source: Source = Source.RULES
    needs_llm: bool = False
    unsure: list[Unsure] = Field(default_factory=list)
    rules_fired: list[str] = Field(default_factory=list)
    llm_prompt: str | None = None
    llm_prompt_version: str | None = None
    llm_model: str | None = None
    llm_error: str | None = None


# The fields the rules leave to the LLM step: unset by `from_rules`, each None by default (checked below).
_LLM_FIELDS = ("llm_prompt", "llm_prompt_version", "llm_model", "llm_error")
# The fields the rules fill (`from_rules` takes each of them).
_RULES_FIELDS = ("keyword", "loan_type", "timeline", "applied_elsewhere", "wrong_number", "not_interested",
                 "handoff_reasons", "callback_window", "source", "needs_llm", "unsure", "rules_fired")
if any(ReplyAnalysis.model_fields[name].default is not None for name in _LLM_FIELDS) or (  # pragma: no cover
        {*_RULES_FIELDS, *_LLM_FIELDS} != set(ReplyAnalysis.model_fields)):
    raise RuntimeError("from_rules: every field is the rules' or the LLM's (None by default); a new field needs "
                       "a place in _RULES_FIELDS or _LLM_FIELDS")
_ORDER = tuple(ReplyAnalysis.model_fields)
_set_attribute = object.__setattr__


def from_rules(values: dict[str, object]) -> ReplyAnalysis:
    """`ReplyAnalysis.model_construct(**values)` for the rules' result, where `values` holds every field but
    the LLM's, each already of its type: the same model (fields, the fields set, their order), without
    pydantic's walk over every field's aliases and defaults (~5 µs of a 60 µs analysis; tests/test_rule_index.py
    compares the two)."""
    model = ReplyAnalysis.__new__(ReplyAnalysis)
    _set_attribute(model, "__dict__", {name: values.get(name) for name in _ORDER})
    _set_attribute(model, "__pydantic_fields_set__", set(values))
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


def unsure_about_safety(analysis: ReplyAnalysis) -> bool:
    """Whether the rules were unsure about a safety category (opt-out, rate lock, closing, deadline) and no LLM
    settled it: with no LLM answer such a reply goes to a person; unsure about a plain field only asks on."""
    return analysis.needs_llm and analysis.llm_prompt is None and Unsure.SAFETY in analysis.unsure


def hands_off_without_llm(analysis: ReplyAnalysis) -> bool:
    """Whether the rules alone put this reply in front of a person (a handoff reason, or unsure about safety)."""
    return bool(analysis.handoff_reasons) or (analysis.needs_llm and Unsure.SAFETY in analysis.unsure)
