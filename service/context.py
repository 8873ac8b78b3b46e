"""Everything the handlers and workers share (AppContext), built once from Settings by build_context and passed
down; the brokers file and the do-not-text file are synced into the database on the way.

build_context takes its collaborators (the Twilio gateway, the output guard, the reply rules, the sending
policy, the LLM extractor) as arguments; whichever is not given is built from the settings, the slow ones on
first use."""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import select

from service import opener_tally
from service.broker_reload import check_file, start_brokers
from service.brokers import load_brokers
from service.db import make_engine, session_scope
from service.errors import ConfigError, PolicyError
from service.logs import log
from service.migrations.head import upgrade_at_start
from service.models import Broker, DoNotText
from service.phones import is_strict_e164
from service.policy.approvals import approval_state, approve_command
from service.policy.broker_values import broker_findings
from service.policy.files import policy_version
from service.replies.rules import load_rules
from service.retention import check_setting
from service.retention_policy import RetentionPolicy, load_retention
from service.settings import Settings
from service.spool import Spool
from service.templates import TemplateSet, load_templates
from service.twilio.client import TwilioGateway
from service.wakeup import install_notify

logger = logging.getLogger("textback.context")


class GuardLike(Protocol):
    def check(self, text: str, *, required: Any = ..., template: Any = ...) -> Any: ...


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    templates: TemplateSet
    gateway: TwilioGateway | None
    # The policy-set version id (service.policy.files.policy_version), read once at start-up: the one version
    # every text, decision and alert records for the audit, and the one approvals sign off.
    policy_version: str = ""
    # The brokers in force: replaced whole (one assignment) when a newer generation is applied, from any
    # process (service.broker_reload); the generation held and the brokers file's SHA-256 as last read here.
    brokers_by_number: dict[str, Broker] = field(default_factory=dict)
    brokers_generation: int = 0
    brokers_file_sha: str = ""
    brokers_refused: str = ""  # the file content (SHA-256) last refused, logged once
    spool: Spool | None = None  # webhooks the database could not take, replayed by the worker
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)  # policies/retention/retention.yaml
    # The openers tally's trigger is in force (service.opener_tally, checked at start-up): the circuit breaker
    # reads its upper bound first. False: every breaker check counts its window exactly.
    opener_tally: bool = False
    _guard: GuardLike | None = None
    # Called (from the guard's loading thread) when the guard fails after start-up; `serve` stops the server.
    guard_failure_hook: Any = None
    _rules: Any = None
    _extractor: Any = None
    _sending: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    digests_sent: set[str] = field(default_factory=set)  # weekly digests this process queued or found queued

    @property
    def own_numbers(self) -> set[str]:
        """Every number that belongs to a broker: texting one would loop or spam the team."""
        numbers: set[str] = set()
        for broker in self.brokers_by_number.values():
            numbers.add(broker.twilio_number)
            numbers.add(broker.forward_to)
            numbers.update(broker.alert_to)
            numbers.update(broker.backup_alert_to or [])
            numbers.update(str(member["phone"]) for member in broker.team or [])
        if self.settings.alerts_from:
            numbers.add(self.settings.alerts_from)
        return numbers

    @property
    def team_numbers(self) -> set[str]:
        """The numbers alerts may go to: every broker's own numbers and the operator's."""
        return self.own_numbers | set(self.settings.operator_alert_to)

    def broker_for(self, twilio_number: str) -> Broker | None:
        return self.brokers_by_number.get(twilio_number)

    @property
    def guard(self) -> GuardLike:
        """The output guard, built on first use (importing guardrails takes seconds)."""
        with self._lock:
            if self._guard is None:
                from service.policy.guard import OutputGuard  # lazy: importing guardrails takes seconds

                # defer: on a restart with the start-up verdicts kept, the Guard loads while the service serves
                guard = OutputGuard.load(self.settings.policies_dir, cache_dir=self.settings.guard_cache_dir,
                                         defer=True, on_failure=self._guard_failed)
                self._same_version(guard.policy_version)
                self._guard = guard
            return self._guard

    def _same_version(self, loaded: str | None = None) -> None:
        """PolicyError when policy files loaded after start-up (the guard, rules, sending policy are built on
        first use) are not the version start-up recorded: what is recorded is always what is enforced."""
        if not self.policy_version:
            return  # a context built without a recorded version (tests of one part)
        now = loaded or policy_version(self.settings.policies_dir)
        if now != self.policy_version:
            raise PolicyError(str(self.settings.policies_dir), None,
                              f"the policy files changed after start-up (started with policy set "
                              f"{self.policy_version}, now {now}): restart textback")

    @property
    def sending_policy(self) -> Any:
        """Quiet hours and caps from policies/sending (loaded and self-checked on first use)."""
        with self._lock:
            if self._sending is None:
                from service.sending.policy import load_sending_policy  # lazy: ~0.4 s to import

                sending = load_sending_policy(self.settings.policies_dir)
                self._same_version()
                self._sending = sending
            return self._sending

    @property
    def rules(self) -> Any:
        with self._lock:
            if self._rules is None:
                rules = load_rules(self.settings.policies_dir)
                self._same_version()
                self._rules = rules
            return self._rules

    @property
    def extractor(self) -> Any:
        """The LLM extractor, or None when no key is configured (rules only). Building it loads the prompt from
        `settings.prompts_dir` and checks it against the output schema (PromptError names the file)."""
        if not self.settings.llm_enabled:
            return None
        with self._lock:
            if self._extractor is None:
                from service.replies.llm import ReplyExtractor  # lazy: imports openai (~2 s); only with a key

                self._extractor = ReplyExtractor(
                    api_key=self.settings.openai_api_key or "",
                    base_url=self.settings.openai_base_url,
                    model=self.settings.llm_model,
                    timeout_s=self.settings.llm_timeout_seconds,
                    prompts_dir=self.settings.prompts_dir,
                )
            return self._extractor

    def check_templates(self) -> None:
        """Refuse to start when any borrower template, filled with sample data, fails the output guard (a
        template edited to contain a rate never goes live), or when a value from the brokers file does, alone
        or rendered into a template (ConfigError naming the file and the line of the value)."""
        for rendered in self.templates.sample_renders():
            if rendered.audience != "borrower":
                continue
            result = self.guard.check(rendered.text, required=rendered.required, template=rendered.template_id)
            if not result.allowed:
                rules = ", ".join(sorted({v.rule for v in result.violations}))
                where = self.templates.source_of(rendered)
                raise PolicyError(str(where), f"templates.{rendered.template_id}",
                                  f"blocked by the output guard ({rules}) with sample data")
        path = self.settings.resolved_brokers_file()
        findings = broker_findings(self.guard, self.templates, load_brokers(path), path)
        if findings:
            more = f" (and {len(findings) - 1} more; run `textback policy check`)" if len(findings) > 1 else ""
            raise ConfigError(findings[0] + more)

    def warm_up(self) -> None:
        """Load the rules (and dateparser, through an explicit date), the sending policy and the guard before the
        first webhook, so the first missed call and the first explicit date are answered like every other (a rules
        file that does not load stops start-up).

        The guard comes last: on a restart it answers start-up's checks from the verdicts the last start kept and
        imports guardrails on a background thread (service.policy.guard), so that import overlaps the server's
        start, not the rules' and dateparser's."""
        _ = self.extractor  # with an LLM configured: its prompt file loads and matches the schema, or no start
        # An explicit date: the first one a process reads loads dateparser (~200 ms or more), here, not on a reply.
        self.rules.analyze("buying a home by March 15, after 5 works", datetime.now(UTC))
        _ = self.sending_policy
        # The next start answers these same checks from the verdicts kept here while its Guard loads.
        recording = getattr(self.guard, "startup_checks", None)
        with recording() if recording is not None else nullcontext():
            self.check_templates()

    def _guard_failed(self, reason: str) -> None:
        """The guard's background build failed or disagreed with the kept verdicts (every text is blocked now):
        what `serve` or `worker` registered stops the process, as start-up would have refused to start."""
        hook = self.guard_failure_hook
        if hook is not None:
            hook(reason)

    def wait_for_guard(self) -> bool:
        """While the output guard loads in the background (a restart), wait for it here, before any transaction
        is opened, rather than inside one (a text's check waits too, but holding the write lock). Bounded by the
        guard's own watchdog. True when the guard can give verdicts (loaded, or not built yet)."""
        guard = self._guard
        wait = getattr(guard, "wait_loaded", None)
        if wait is not None and getattr(guard, "state", "ok") == "loading":
            from service.policy.guard import GUARD_LOAD_WAIT_SECONDS  # lazy: a restart only

            wait(GUARD_LOAD_WAIT_SECONDS + 5)
        return self.guard_state() in ("ok", "not loaded")

    def guard_state(self) -> str:
        """The output guard's state without building it: `not loaded`, `loading` (in the background), `failed`
        or `ok`."""
        guard = self._guard
        if guard is None:
            return "not loaded"
        return str(getattr(guard, "state", "ok"))

    def close(self) -> None:
        if self._extractor is not None:
            self._extractor.close()
        if self.gateway is not None:
            self.gateway.close()
        if self.spool is not None:
            self.spool.close()
        self.engine.dispose()


def read_do_not_text_file(path: Path) -> list[str]:
    """One E.164 number per line; '#' starts a comment. A bad line is a ConfigError naming the line."""
    numbers: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: do-not-text file not found") from None
    for number, line in enumerate(lines, start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if not is_strict_e164(value):
            raise ConfigError(f"{path}:{number}: {value!r} is not an E.164 phone number")
        numbers.append(value)
    return numbers


def sync_do_not_text(engine: Engine, numbers: list[str]) -> None:
    """Make the file's numbers the 'file' entries of the do-not-text list (API entries are kept)."""
    with session_scope(engine) as session:
        existing = session.exec(select(DoNotText).where(DoNotText.source == "file")).all()
        have = {row.phone for row in existing}
        for row in existing:
            if row.phone not in numbers:
                session.delete(row)
        for phone in sorted(set(numbers) - have):
            session.add(DoNotText(phone=phone, broker_id=None, source="file"))


def start_policy_version(settings: Settings) -> str:
    """The policy-set version this process runs. With `require_approved_policies` (the production setting) a
    version nobody signed off is refused: ConfigError naming the version and the command that approves it."""
    if not settings.require_approved_policies:
        return policy_version(settings.policies_dir)
    state = approval_state(settings.policies_dir)
    if not state.approved:
        raise ConfigError(
            f"policy set {state.version} in {settings.policies_dir} is not approved and "
            f"TEXTBACK_REQUIRE_APPROVED_POLICIES is on: review it (`textback policy diff`, `textback policy "
            f"report`), then run `{approve_command(settings.policies_dir)}`"
        )
    latest = state.latest
    if latest is not None:
        log(logger, logging.INFO, "policy set approved", version=state.version, reviewer=latest.reviewer,
            approvals=len(state.approvals))
    return state.version


def build_context(settings: Settings, *, gateway: TwilioGateway | None = None, guard: GuardLike | None = None,
                  rules: Any = None, sending_policy: Any = None, extractor: Any = None,
                  templates: TemplateSet | None = None) -> AppContext:
    """Validate configuration, create or upgrade the schema (service.migrations), load brokers and templates.

    The collaborators given are used as they are (tests share one guard and the shipped templates across a
    run; the evals share the rules and the sending policy across scripts); the others are built from the settings: the gateway now
    (none in dry-run), the guard, rules, sending policy and extractor on first use."""
    # Parsed and hashed as one read (changed in between: refused), so the generation records the file it applied.
    checked = check_file(settings.resolved_brokers_file(), None, None)
    configs, brokers_sha = checked.configs, checked.sha256
    version = start_policy_version(settings)
    templates = templates if templates is not None else load_templates(settings.policies_dir)
    retention = load_retention(settings.policies_dir)
    check_setting(settings.retention_days, retention)  # never an automatic purge shorter than the policy
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                         max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout_seconds)
    if settings.listen_notify:
        install_notify(engine)  # PostgreSQL: a transaction that queues work wakes the other processes' sweeps
    upgrade_at_start(engine)  # at head: one read; else under the migration lock (processes take turns)
    try:
        tally = opener_tally.in_force(engine)
        brokers, generation, guard = start_brokers(settings, engine, configs, brokers_sha, guard=guard,
                                                   templates=templates)
    except BaseException:
        engine.dispose()
        raise
    if settings.do_not_text_file is not None:
        sync_do_not_text(engine, read_do_not_text_file(settings.do_not_text_file))
    if gateway is None and not settings.dry_run:
        gateway = TwilioGateway(
            account_sid=settings.twilio_account_sid or "",
            auth_token=settings.twilio_auth_token or "",
            api_url=settings.twilio_api_url,
            lookup_url=settings.twilio_lookup_url,
            timeout=settings.send_timeout_seconds,
        )
    return AppContext(settings=settings, engine=engine, templates=templates, gateway=gateway, policy_version=version,
                      brokers_by_number=brokers, brokers_generation=generation, brokers_file_sha=brokers_sha,
                      spool=Spool(settings.spool_dir), retention=retention, opener_tally=tally, _guard=guard,
                      _rules=rules, _sending=sending_policy,
                      _extractor=extractor)
