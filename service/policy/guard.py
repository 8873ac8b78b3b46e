"""The output guard: every borrower-facing text passes a guardrails Guard built from the outbound rules.

    guard = OutputGuard.load(Path("policies"))   # imports guardrails (~5 s) once: do it at start-up
    result = guard.check(text, required={"brokerage": "Harbor Home Loans", "nmls_id": "1234567"})
    result.allowed, result.violations, result.policy_version

How it is built, and why:
- One custom validator, registered as ``textback/outbound-policy`` with ``@register_validator``, reads the
  outbound_rule files and the per-text ``required`` values (passed as guardrails metadata). It reports every
  violation of every rule as error spans, so one check gives the whole finding, not just the first.
- ``on_fail="refrain"``: a failing text is withheld (validated output None), never "fixed".
- guardrails fails open when a named validator is not registered, so ``load`` verifies the registry and the
  Guard's validators. It also holds the rules to the compliance manifest (policies/outbound/required.yaml:
  every required rule present at its minimum severity) and runs every example of every rule, and the
  manifest's own, through the finished Guard (service.policy.selftest; cached per policy version);
  anything unexpected raises PolicyError and the service does not start.
- Offline and quiet: no hub validators; ``allow_metrics_collection=False`` on the Guard (creating a Guard
  re-reads ~/.guardrailsrc, which defaults metrics on), ``settings.disable_tracing = True`` and
  ``GUARDRAILS_RUN_SYNC=true`` (sequential validation: ~0.7 ms a text instead of ~3 ms, and no event loop,
  so ``check`` works from inside an async handler's worker thread).
- The matching (normalised text, each rule's regexes), the verdict types and the remembered verdicts
  (`VerdictCache`) are in service.policy.verdicts; guardrails is imported inside ``load`` only.
- ``check`` holds a lock around the Guard (its call history is shared state): one OutputGuard serves threads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from service.errors import GuardNotReady, PolicyError
from service.logs import log
from service.policy import verdict_file
from service.policy.files import LoadedRule, OutboundRule, display_path, load_outbound_rules, policy_version
from service.policy.manifest import load_manifest, manifest_findings
from service.policy.selftest import SelfTest, cached_self_test, run_self_test
from service.policy.verdicts import (
    GUARD_ERROR,
    VERDICT_CACHE_SIZE,
    GuardResult,
    VerdictCache,
    VerdictKey,
    Violation,
    as_record,
    content_violations,
    copy_result,
    scan,
)

logger = logging.getLogger("textback.policy")

VALIDATOR_NAME = "textback/outbound-policy"
_SEPARATOR = ": "


# ---------------------------------------------------------------------------------------------------------
# The guardrails part. Nothing below imports guardrails at module import time.


@cache
def _validator_class() -> type:
    """Define and register the custom validator (once per process)."""
    from guardrails.validator_base import (  # lazy: guardrails is imported lazily on purpose
        ErrorSpan,
        FailResult,
        PassResult,
        Validator,
        register_validator,
    )

    @register_validator(name=VALIDATOR_NAME, data_type="string")
    class OutboundPolicy(Validator):  # type: ignore[misc]  # guardrails ships no types: Validator is Any
        """Fails a text that matches any block rule, lacks a required value (metadata["required"]) or lacks
        what its template kind must say (metadata["template"])."""

        def __init__(self, rules: Sequence[OutboundRule], on_fail: str = "refrain") -> None:
            super().__init__(on_fail=on_fail, rule_ids=[r.id for r in rules])
            self._rules = [r for r in rules if r.severity == "block"]

        def _validate(self, value: Any, metadata: dict[str, Any]) -> Any:
            text = value if isinstance(value, str) else str(value)
            required, template = metadata.get("required") or {}, metadata.get("template")
            found = scan(text, self._rules) + content_violations(text, required, template)
            if not found:
                return PassResult()
            spans = [
                ErrorSpan(start=0, end=len(text), reason=f"{v.rule}{_SEPARATOR}{v.match}") for v in found
            ]
            rules = ", ".join(sorted({v.rule for v in found}))
            return FailResult(error_message=f"text breaks outbound policy: {rules}", error_spans=spans)

    return OutboundPolicy


def _quiet_guardrails() -> None:
    """Telemetry and tracing off for the whole process; sequential validation."""
    os.environ["GUARDRAILS_RUN_SYNC"] = "true"
    _skip_iri_grammar()
    from guardrails.settings import (
        settings,  # lazy: guardrails takes ~5 s to import; only building a Guard needs it
    )

    settings.disable_tracing = True


def _skip_iri_grammar() -> None:
    """guardrails requires jsonschema with its format-nongpl extra, whose `rfc3987_syntax` builds an IRI grammar
    when imported: 1.5 s of every start (a third of importing guardrails) for the JSON-schema formats "iri" and
    "iri-reference", which no schema here uses. Marked absent before guardrails first loads jsonschema, which
    then leaves those two formats unchecked, as it does when the package is not installed."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "import fails"


def _telemetry_off() -> None:
    # HubTelemetry is a process-wide singleton that any Guard created later without
    # allow_metrics_collection=False switches back on; make sure it is off before every check.
    from guardrails.utils.hub_telemetry_utils import (
        HubTelemetry,  # lazy: guardrails takes ~5 s to import; only building a Guard needs it
    )

    HubTelemetry()._enabled = False  # no public switch exists


# How long a restart's Guard may take to load in the background (seconds; ~5 on an idle machine): then the
# guard fails (every check raises GuardNotReady, nothing stored, the work tried again) and the service stops.
GUARD_LOAD_WAIT_SECONDS = 60.0
_BUILD_LOCK = threading.Lock()  # one Guard built at a time: guardrails' validator registry is process-wide


class OutputGuard:
    """The guardrails Guard over the outbound rules. Build with `OutputGuard.load(policies_dir)`.

    Loaded with `defer=True` and a start-up verdict file for this exact policy set and guard code
    (service.policy.verdict_file), the Guard is built on a background thread and start-up's own check (inside
    `startup_checks`, on the thread that runs it) is answered from the file meanwhile, so the service serves
    seconds sooner. Every other check, every text queued for a person included, waits for the Guard: no text is
    ever queued on the file's word. Once built, the Guard checks again each verdict the file gave; if any
    differs, or the build fails or takes longer than GUARD_LOAD_WAIT_SECONDS, the guard is `failed`: every
    check raises GuardNotReady (no text is stored, the work is tried again), the file is removed so the next
    start loads the Guard first, and `on_failure` is called (`serve` and `worker` stop).
    """

    def __init__(self, guard: Any, rules: list[LoadedRule], version: str, *,
                 cache_size: int = VERDICT_CACHE_SIZE) -> None:
        self._guard = guard
        self._lock = threading.Lock()
        self.verdicts = VerdictCache(cache_size)
        self.rules = rules
        self.policy_version = version
        self.self_test: SelfTest | None = None  # set by `load`: how many examples, and whether cached
        self._ready = threading.Event()  # the Guard is built (or failed to build: `load_error`)
        self._load_started = time.monotonic()
        if guard is not None:
            self._ready.set()
        self.load_error: str | None = None
        self.on_failure: Callable[[str], None] | None = None  # called once, from the loading thread, on `failed`
        self._cache_dir: Path | None = None
        # Inside `startup_checks` (its thread only): every verdict given, by digest, for the next start.
        self._startup: dict[str, dict[str, Any]] | None = None
        self._startup_thread: int | None = None
        # While the Guard loads: the verdicts read from the file, and the start-up checks they answered.
        self._bridge_lock = threading.Lock()
        self._bridge: dict[str, dict[str, Any]] = {}
        self._bridged: list[tuple[VerdictKey, GuardResult]] = []
        self._watchdog: threading.Timer | None = None  # fails a background load that takes too long

    @classmethod
    def load(cls, policies_dir: Path, *, cache_dir: Path | None = None, defer: bool = False,
             on_failure: Callable[[str], None] | None = None) -> OutputGuard:
        """Read the outbound rules, hold them to the manifest, build the Guard and run every example through
        it (skipped when `cache_dir` records a pass for this exact policy set and guard code). PolicyError,
        naming the file, if anything is off: the service must not start.

        `defer`: when `cache_dir` also holds the start-up verdicts for this policy set and guard code, return
        at once and build the Guard on a background thread (see the class docstring); `on_failure` is called
        with the reason if that build fails or disagrees with the file."""
        rules = load_outbound_rules(policies_dir)
        manifest = load_manifest(policies_dir)
        findings = manifest_findings(manifest, rules)
        if findings:
            raise findings[0]
        version = policy_version(policies_dir)
        if defer and cache_dir is not None:
            cached = cached_self_test(policies_dir, cache_dir)
            known = verdict_file.read(cache_dir, cached.key, version) if cached is not None else None
            if cached is not None and known is not None:
                deferred = cls(None, rules, version)
                deferred.self_test, deferred._cache_dir, deferred._bridge = cached, cache_dir, known
                deferred.on_failure = on_failure
                threading.Thread(target=deferred._build, args=(policies_dir,), name="textback-guard-load",
                                 daemon=True).start()
                reason = f"the output guard did not load within {GUARD_LOAD_WAIT_SECONDS:g} s"
                deferred._watchdog = threading.Timer(GUARD_LOAD_WAIT_SECONDS, deferred._fail, args=(reason,))
                deferred._watchdog.daemon = True
                deferred._watchdog.start()
                return deferred
        output_guard = cls.from_rules(rules, version, policies_dir)
        output_guard.self_test = run_self_test(output_guard, policies_dir, manifest, cache_dir)
        output_guard._cache_dir = cache_dir
        output_guard.on_failure = on_failure
        return output_guard

    @property
    def state(self) -> str:
        """`loading` while the Guard is built in the background, `failed` when that failed, took longer than
        GUARD_LOAD_WAIT_SECONDS or disagreed with the kept verdicts, else `ok`."""
        if self.load_error is not None:
            return "failed"
        return "ok" if self._ready.is_set() else "loading"

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """True once the Guard is built (or failed to build) and every verdict given from the file re-checked."""
        return self._ready.wait(timeout)

    @contextmanager
    def startup_checks(self) -> Iterator[None]:
        """Around start-up's checks: on this thread, while the Guard loads, a check the kept verdicts hold is
        answered from them; every verdict given inside is written for the next start (only when the block
        completes and the guard has not failed; a start that fails keeps nothing)."""
        self._startup, self._startup_thread = {}, threading.get_ident()
        try:
            yield
            startup = dict(self._startup)
        finally:
            self._startup, self._startup_thread = None, None
        if not startup or self._cache_dir is None or self.self_test is None:
            return
        with self._bridge_lock:  # against `_build`: a file it removes for disagreeing is never written back
            if self.load_error is None:
                verdict_file.write(self._cache_dir, self.self_test.key, self.policy_version, startup)

    def _build(self, policies_dir: Path) -> None:
        """The background load: build the Guard, then check again each verdict the file gave meanwhile."""
        started = time.perf_counter()
        error: str | None = None
        guard: Any = None
        try:
            guard = type(self).from_rules(self.rules, self.policy_version, policies_dir)._guard
        except BaseException as exc:  # fail closed: the guard is `failed`, no text gets a verdict from now on
            error = f"the output guard did not load ({type(exc).__name__}: {exc})"
        with self._bridge_lock:
            if self.load_error is not None:
                return  # the watchdog failed it first: it did not load in time
            self._guard = guard
            bridged, self._bridged, self._bridge = self._bridged, [], {}
            disagreed = []
            for key, given in bridged if error is None else []:
                _, template, text, required = key
                fresh = self._validate(text, required=dict(required), template=template)
                self.verdicts.put(key, fresh)
                if (fresh.allowed, fresh.violations) != (given.allowed, given.violations):
                    disagreed.append(template or "(no template)")
                    log(logger, logging.ERROR, "a kept guard verdict disagreed with the guard", template=template,
                        kept="allowed" if given.allowed else "blocked",
                        guard=", ".join(sorted({v.rule for v in fresh.violations})) or "allowed")
            if disagreed:
                error = (f"the start-up verdicts kept in {self._cache_dir} disagreed with the output guard "
                         f"({', '.join(sorted(set(disagreed)))}); the file is removed: start again")
            if error is None:
                self._ready.set()
        if error is None:
            if self._watchdog is not None:
                self._watchdog.cancel()
            log(logger, logging.INFO, "output guard loaded", seconds=round(time.perf_counter() - started, 3),
                rechecked=len(bridged))
            return
        self._fail(error)

    def _fail(self, error: str) -> None:
        """Once, from the loading thread or the watchdog: the guard is `failed` (every check raises
        GuardNotReady), the kept verdicts' file is removed (the next start loads the Guard first, and then
        starts or refuses as a first start does), `on_failure` is called, then waiters are let go."""
        with self._bridge_lock:
            if self.load_error is not None or self._ready.is_set():
                return  # loaded in time, or failed already
            self.load_error = error
            self._bridge, self._bridged = {}, []
            if self._cache_dir is not None and self.self_test is not None:
                verdict_file.remove(self._cache_dir, self.self_test.key)
        log(logger, logging.ERROR, "output guard failed", error=error,
            seconds=round(time.monotonic() - self._load_started, 3))
        try:
            if self.on_failure is not None:
                self.on_failure(error)
        finally:
            self._ready.set()  # after on_failure: whoever waits sees a guard that has failed and been reported

    @classmethod
    def from_rules(cls, rules: list[LoadedRule], version: str, policies_dir: Path) -> OutputGuard:
        """Build and verify the Guard over these rules, without the manifest or the examples.

        Only `policy check` uses this directly: it reports every manifest finding and every failing example
        itself. Everything that checks texts for real goes through `load`.
        """
        with _BUILD_LOCK:
            return cls._from_rules(rules, version, policies_dir)

    @classmethod
    def _from_rules(cls, rules: list[LoadedRule], version: str, policies_dir: Path) -> OutputGuard:
        _quiet_guardrails()
        from guardrails import Guard  # lazy: guardrails takes ~5 s to import; only building a Guard needs it
        from guardrails.settings import (
            settings,  # lazy: guardrails takes ~5 s to import; only building a Guard needs it
        )
        from guardrails.validator_base import (
            validators_registry,  # lazy: guardrails takes ~5 s to import; only building a Guard needs it
        )

        where = display_path(policies_dir / "outbound", policies_dir)
        validator_cls = _validator_class()
        if validators_registry.get(VALIDATOR_NAME) is not validator_cls:
            raise PolicyError(where, None, f"validator {VALIDATOR_NAME} is not registered with guardrails")
        guard = Guard(name="textback-outbound", history_max_length=1)
        guard.configure(allow_metrics_collection=False)
        settings.rc.enable_metrics = False  # validators read this when they are created
        guard.use(validator_cls([loaded.rule for loaded in rules]))
        named = [v.rail_alias for v in guard.get_validators("output")]
        if named != [VALIDATOR_NAME]:
            raise PolicyError(where, None, f"the guard runs {named}, expected [{VALIDATOR_NAME!r}]")
        return cls(guard, rules, version)

    def check(
        self, text: str, *, required: Mapping[str, str] | None = None, template: str | None = None
    ) -> GuardResult:
        """Validate one text through the Guard. Fails closed: any guard error blocks the text.

        `required`: values that must appear (the template's `requires:` and its kind's identity values);
        `template`: the template id it was rendered from, whose kind may require content by code.
        A text checked before under the same policy version, template and required values gets the verdict
        given then (`VerdictCache`); any other text goes through the Guard (while it loads in the background,
        start-up's own check may be answered from the kept verdicts; anything else waits for the Guard).
        """
        if self.load_error is not None:  # failed after start-up: no verdict at all, remembered or not
            raise GuardNotReady("the output guard failed after start-up")
        key = VerdictCache.key(self.policy_version, template, text, required)
        known = self.verdicts.get(key)
        recording = self._startup_thread == threading.get_ident()
        name = verdict_file.digest(template, text, required) if recording else ""
        if known is None and recording and not self._ready.is_set():
            known = self._bridged_verdict(key, name)
        if known is None:
            # Bounded by the watchdog, which fails the guard GUARD_LOAD_WAIT_SECONDS after the load began.
            self._ready.wait(max(self._load_started + GUARD_LOAD_WAIT_SECONDS - time.monotonic(), 0) + 5)
            if self.load_error is not None or not self._ready.is_set():
                raise GuardNotReady("the output guard did not load")  # not a verdict: the work is tried again
            known = self._validate(text, required=required, template=template)
            self.verdicts.put(key, known)
        startup = self._startup
        if recording and startup is not None and not any(v.rule == GUARD_ERROR for v in known.violations):
            startup[name] = as_record(known)
        return known

    def _bridged_verdict(self, key: VerdictKey, name: str) -> GuardResult | None:
        """The start-up verdict kept for this start-up check (`name`: its digest), while the Guard loads (noted,
        to be checked again)."""
        with self._bridge_lock:
            kept = self._bridge.get(name)
            if kept is None:
                return None
            result = GuardResult(kept["allowed"], [Violation(*pair) for pair in kept["violations"]],
                                 self.policy_version, [Violation(*pair) for pair in kept["warnings"]])
            self._bridged.append((key, copy_result(result)))
        return result

    def _validate(self, text: str, *, required: Mapping[str, str] | None, template: str | None) -> GuardResult:
        """One run of the Guard (no cache)."""
        if self.load_error is not None or self._guard is None:
            return GuardResult(False, [Violation(GUARD_ERROR, "the output guard did not load")], self.policy_version)
        metadata = {"required": dict(required or {}), "template": template}
        try:
            with self._lock:
                _telemetry_off()
                outcome = self._guard.validate(text, metadata=metadata)
        except Exception as exc:  # any failure inside guardrails must block, not crash a send
            return GuardResult(False, [Violation(GUARD_ERROR, type(exc).__name__)], self.policy_version)
        violations = _violations(outcome)
        allowed = bool(outcome.validation_passed) and outcome.validated_output == text and not violations
        if not allowed and not violations:
            violations = [Violation(GUARD_ERROR, outcome.error or "validation did not pass")]
        warn_rules = [loaded.rule for loaded in self.rules if loaded.rule.severity == "warn"]
        warnings = scan(text, warn_rules, severity="warn") if warn_rules else []
        return GuardResult(allowed, violations, self.policy_version, warnings)


def _violations(outcome: Any) -> list[Violation]:
    found: list[Violation] = []
    for summary in outcome.validation_summaries or []:
        for span in summary.error_spans or []:
            rule, _, match = (span.reason or "").partition(_SEPARATOR)
            found.append(Violation(rule=rule, match=match))
    return found
