"""All configuration in one pydantic-settings class, built once by the caller and passed down."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.phones import is_strict_e164
from service.resources import EXAMPLE_BROKERS, default_dir, shipped

SUPPORTED_DATABASES = "use sqlite:///path/to/textback.db or postgresql://user:password@host:5432/dbname"
DEV_PUBLIC_URL = "http://localhost:8000"  # dry-run's default; live mode refuses it (service.startup_errors)
DEV_AUTH_TOKEN = "textback-dev-token"  # noqa: S105 - the documented dry-run signing token, not a secret


class Settings(BaseSettings):
    """textback's settings. Env prefix `TEXTBACK_`; Twilio's and OpenAI's own variable names are honoured."""

    # hide_input_in_errors: a ValidationError never repeats a value (a database URL carries its password).
    model_config = SettingsConfigDict(env_prefix="TEXTBACK_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    database_url: str = "sqlite:///./var/textback.db"
    # Start-up waits this long in all for an unreachable database (retrying) before it stops with an error.
    database_wait_seconds: float = Field(default=10.0, ge=0)
    # PostgreSQL: each process keeps up to `db_pool_size` connections open, opens up to `db_max_overflow` more
    # under load, and a transaction waits `db_pool_timeout_seconds` at most for one (then it fails as the
    # database being unavailable: a webhook is spooled and answered, other work is retried). Every process of
    # every host counts against the server's max_connections (100 by default): size them together, or put a
    # pooler (PgBouncer, transaction mode) in between. SQLite ignores these.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    public_url: str = DEV_PUBLIC_URL
    brokers_file: Path = Path("brokers.yaml")
    # Each process hashes the brokers file every poll and applies a valid edit (`textback brokers reload` works
    # either way; service.broker_reload). Off: only that command changes the brokers in force.
    brokers_watch: bool = True
    # The policies and prompts folders: when not set, ./policies (./prompts) if the working directory has one, else
    # the copies shipped with textback (service.resources; start-up says which it uses).
    policies_dir: Path = Field(default_factory=lambda: default_dir("policies"))
    # Production: refuse to start (serve, worker, the ASGI app) unless this exact policy-set version was signed
    # off with `textback policy approve` (policies/approvals.yaml); any later edit to a policy file needs its own.
    require_approved_policies: bool = False
    prompts_dir: Path = Field(default_factory=lambda: default_dir("prompts"))
    # Where start-up records that the output guard passed every policy example, once per policy version and
    # guard code (a small JSON file per version); None or "" runs the examples at every start.
    guard_cache_dir: Path | None = Path("var/guard-cache")
    twilio_api_url: str = "https://api.twilio.com"
    twilio_lookup_url: str = "https://lookups.twilio.com"
    twilio_messaging_url: str = "https://messaging.twilio.com"  # Messaging Services and A2P (textback doctor)

    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "TEXTBACK_TWILIO_ACCOUNT_SID")
    )
    twilio_auth_token: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "TEXTBACK_TWILIO_AUTH_TOKEN")
    )
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "TEXTBACK_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "TEXTBACK_OPENAI_BASE_URL")
    )
    llm_model: str = "gpt-4o-mini"
    llm_timeout_seconds: float = 8.0  # one hard deadline per LLM call, retries and Retry-After waits included
    llm_concurrency: int = 4  # replies read by the LLM at once, in a pool of their own (webhooks never wait)

    opener_cooldown_hours: float = 24.0
    # Texts forwarded to the broker: at most one per lead per window; the rest of a burst is one follow-up alert
    # at the window's end (a text with a new reason for a person always goes at once). 0: no limit.
    forward_window_seconds: float = Field(default=300.0, ge=0)
    max_automated_texts_per_lead: int | None = None  # None: the per_lead_total in policies/sending/caps.yaml
    operator_alert_to: list[str] = Field(default_factory=list)  # circuit-breaker alerts (default: the broker's alert_to)
    # The Twilio number (of this account) that alerts leave from when a broker's own number cannot send, and that
    # escalations leave from. Default: another configured broker's Twilio number.
    alerts_from: str | None = None
    # Webhooks that could not be stored while the database was unreachable are spooled here (fsync'd JSON lines,
    # one file per process) and replayed by the worker once the database answers.
    spool_dir: Path = Path("var/spool")
    # A missed call replayed from the spool later than this gets an alert to the broker instead of an opener.
    replay_opener_max_age_seconds: float = Field(default=600.0, ge=0)
    do_not_text_file: Path | None = None  # one E.164 number per line, '#' comments; never texted automatically
    opener_is_reply_override: bool | None = None  # None: as policies/sending/quiet_hours.yaml says
    send_timeout_seconds: float = 10.0
    send_max_attempts: int = 6
    send_retry_base_seconds: float = 2.0
    max_body_bytes: int = 64 * 1024
    # Slow and idle clients (service.server): open connections per process (never more than three quarters of the
    # open-files limit; over it new ones get 503 at once), seconds a client has to send its request line and
    # headers, seconds a request body may stall, seconds an idle keep-alive connection is kept between requests.
    max_connections: int = Field(default=1000, ge=1)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=15.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    worker_poll_seconds: float = 1.0
    # After a webhook's response, each kind of work has its own bounded threads in every process (service.lanes):
    # sends, and reply processing (the LLM has TEXTBACK_LLM_CONCURRENCY). Work that finds its lane full stays a
    # row (a pending text, a received reply) for the sweep.
    send_threads: int = Field(default=8, ge=1)
    reply_threads: int = Field(default=4, ge=1)
    # The webhooks' own transactions run on at most this many threads per process (anyio's default is 40):
    # more only queue for the database and take the CPU from the sends (a burst of 500 missed calls on
    # PostgreSQL, 2 processes: the opener's p50 0.9-1.5 s with 8, 0.76-0.95 s with 4; benchmarks/README.md).
    webhook_threads: int = Field(default=4, ge=1)
    # PostgreSQL: every transaction that queues a text or stores a reply says so (NOTIFY); each sweeping process
    # listens, so a worker in another process starts at once instead of at its next poll. Off: poll only.
    listen_notify: bool = True
    weekly_digest: bool = True  # Mondays from 08:00 broker time: last week's headline numbers to alert_to
    # A text left in 'sending' (or a reply left in 'processing') longer than this is treated as abandoned by a
    # dead process: it goes back to the queue (a text as an unknown outcome, reconciled before any resend).
    # Keep stale_claim_seconds well above send_timeout_seconds, or a slow live send would be claimed twice,
    # and stale_processing_seconds well above llm_timeout_seconds (both are checked below).
    stale_claim_seconds: float = 90.0
    stale_processing_seconds: float = 120.0
    # Outgoing CRM webhooks (`webhooks:` in the brokers file): each of connect, write and read gets this timeout;
    # a failure that may pass (5xx, 408, 429, timeout, connection error) is retried with backoff (30 s, 2 min,
    # 10 min, 1 h, 6 h, jittered) up to this many attempts in all; a Retry-After longer than the cap is capped.
    # A delivery left claimed longer than stale_claim_seconds (at least three timeouts plus 5 s) is taken over.
    crm_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    crm_webhook_max_attempts: int = Field(default=6, ge=1)
    crm_webhook_retry_after_max_seconds: float = Field(default=3600.0, ge=0)
    run_worker: bool = True
    line_type_lookup: bool = False
    # The automatic retention (hourly, service.retention): unset = none; a number of days at least the retention
    # policy's period on every day (policies/retention/retention.yaml: 25 months, so 762; start-up refuses less);
    # `policy` = the policy's own period.
    retention_days: Annotated[int, Field(ge=1)] | Literal["policy"] | None = None
    log_level: str = "INFO"
    # Operability (service.probes, service.metrics, service.logs): /ready answers 503 once a due text, a reply or a
    # spooled webhook has waited longer than this; /metrics is served only with this token set, to requests with
    # `Authorization: Bearer <token>` (else 404); uvicorn's access log (JSON, phones masked) on or off.
    ready_backlog_seconds: float = Field(default=300.0, gt=0)
    metrics_token: str | None = Field(default=None, min_length=16)
    access_log: bool = True
    # Sign-in (service.signin): codes texted per phone and per client address, code checks per client address,
    # each counted over the window (durable AuthAttempt rows, shared by every process). Behind a proxy the client
    # address is the proxy's unless uvicorn is told to trust it (--proxy-headers --forwarded-allow-ips).
    signin_window_minutes: float = Field(default=15.0, gt=0)
    signin_codes_per_phone: int = Field(default=5, ge=1)
    signin_codes_per_address: int = Field(default=20, ge=1)
    signin_checks_per_address: int = Field(default=30, ge=1)
    # The link in an alert (/l/<token>): single use, valid this long.
    lead_link_hours: float = Field(default=24.0, gt=0)
    # A text from the team to a textback number gets the link answer at most once per lead in this window.
    reply_hint_window_minutes: float = Field(default=60.0, ge=0)

    @field_validator("guard_cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        # Never echoes the URL: it may hold the database password.
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            msg = f"not a database URL; {SUPPORTED_DATABASES}"
            raise ValueError(msg) from None
        if backend not in {"sqlite", "postgresql", "postgres"}:
            msg = f"{backend!r} databases are not supported; {SUPPORTED_DATABASES}"
            raise ValueError(msg)
        return value

    @field_validator("public_url", "twilio_api_url", "twilio_lookup_url", "twilio_messaging_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            msg = "must start with http:// or https://"
            raise ValueError(msg)
        return value.rstrip("/")

    @field_validator("alerts_from", "operator_alert_to")
    @classmethod
    def _phones(cls, value: str | list[str] | None) -> str | list[str] | None:
        for number in [value] if isinstance(value, str) else value or []:
            if not is_strict_e164(number):
                msg = f"{number!r} is not an E.164 phone number (like +14155550123)"
                raise ValueError(msg)
        return value

    @field_validator("llm_timeout_seconds")
    @classmethod
    def _llm_deadline_positive(cls, value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            msg = f"must be a positive number of seconds (the hard deadline of one LLM call), got {value}"
            raise ValueError(msg)
        return value

    @field_validator("llm_concurrency")
    @classmethod
    def _llm_pool_not_empty(cls, value: int) -> int:
        if value < 1:
            msg = f"must be at least 1 (replies the LLM reads at once), got {value}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _stale_processing_outlasts_an_llm_call(self) -> Settings:
        floor = 2 * self.llm_timeout_seconds + 5
        if self.stale_processing_seconds < floor:
            msg = (f"stale_processing_seconds ({self.stale_processing_seconds}) must exceed twice "
                   f"llm_timeout_seconds plus 5 ({floor}), or a reply still being read by the LLM could be "
                   "claimed by a second worker")
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _stale_claim_outlasts_a_send(self) -> Settings:
        floor = 2 * self.send_timeout_seconds + 5
        if self.stale_claim_seconds < floor:
            msg = (f"stale_claim_seconds ({self.stale_claim_seconds}) must exceed twice send_timeout_seconds plus 5 "
                   f"({floor}), or a slow send could be claimed by a second worker")
            raise ValueError(msg)
        return self

    @property
    def dry_run(self) -> bool:
        """No Twilio credentials: texts are stored and printed instead of sent."""
        return not (self.twilio_account_sid and self.twilio_auth_token)

    @property
    def signing_token(self) -> str:
        """The token X-Twilio-Signature is checked against (the dev token in dry-run)."""
        return self.twilio_auth_token or DEV_AUTH_TOKEN

    def resolved_brokers_file(self) -> Path:
        """The brokers file; with no brokers.yaml in dry-run only, the example (./brokers.example.yaml, else the
        shipped one): the demo brokers. Live mode never falls back to them: a missing brokers.yaml stops it."""
        if self.brokers_file != Path("brokers.yaml") or self.brokers_file.exists() or not self.dry_run:
            return self.brokers_file
        example = Path(EXAMPLE_BROKERS)
        return example if example.exists() else shipped(EXAMPLE_BROKERS)

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure when the public URL is https (a browser then never sends them in clear)."""
        return self.public_url.startswith("https://")

    @property
    def llm_enabled(self) -> bool:
        return bool(self.openai_api_key)


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})  # noqa: S104 - compared, never bound


def public_url_problem(public_url: str) -> str | None:
    """Why TEXTBACK_PUBLIC_URL cannot be the address Twilio calls in live mode (None: it can). Twilio signs the
    exact URL it calls, and every webhook is checked against this one: start-up, `doctor` and `twilio configure`
    all ask here."""
    if public_url == DEV_PUBLIC_URL:
        return "TEXTBACK_PUBLIC_URL is not set"
    if not public_url.startswith("https://"):
        return f"TEXTBACK_PUBLIC_URL is {public_url}, not https"
    if (urlsplit(public_url).hostname or "") in LOCAL_HOSTS:
        return f"TEXTBACK_PUBLIC_URL is {public_url}: Twilio cannot reach this machine's own address"
    return None


def describe_invalid(exc: ValidationError) -> str:
    """One line naming every invalid setting and why (for start-up and command-line errors)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"])
        field = Settings.model_fields.get(name)
        if field is not None and field.validation_alias is None:
            name = f"{name} (TEXTBACK_{name.upper()})"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "invalid settings: " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use (never at import)."""
    return Settings()
