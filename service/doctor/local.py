"""The doctor's checks of what lives with the deployment: settings and mode, the public URL, the database, the
brokers file, the policies and their approval, and the LLM endpoint when one is configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from service.brokers import load_brokers
from service.db import display_url, make_engine, normalize_url
from service.doctor.core import Check, Doctor, failed, ok, warning
from service.errors import ConfigError
from service.migrations.runner import schema_status
from service.policy.approvals import approve_command
from service.policy.check import run_check
from service.replies.llm import DEFAULT_OPENAI_BASE_URL
from service.settings import public_url_problem

LLM_CHECK_TIMEOUT = 5.0  # seconds for the whole LLM endpoint call (connect 2 s)
def check_mode(doc: Doctor) -> list[Check]:
    """The settings are valid (or the run stopped before this), and whether texts are really sent."""
    if doc.settings.dry_run:
        return [warning("settings", "valid; dry-run: no Twilio credentials, texts are printed instead of sent",
                        "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to send real texts")]
    return [ok("settings", "valid; live mode: texts are sent through Twilio")]


def check_public_url(doc: Doctor) -> list[Check]:
    """Twilio signs every webhook against TEXTBACK_PUBLIC_URL: in live mode it must be the https address
    Twilio reaches."""
    url = doc.settings.public_url
    if doc.settings.dry_run:
        return [ok("public URL", f"{url} (dry-run: Twilio never calls it)")]
    problem = public_url_problem(url)
    if problem is not None:
        return [failed("public URL", f"{problem}: live mode needs the https address Twilio calls",
                       "set TEXTBACK_PUBLIC_URL to the https address Twilio calls (scheme and host, as in the console)")]
    return [ok("public URL", f"{url} (https)")]


def check_database(doc: Doctor) -> list[Check]:
    """The database answers and holds every textback table. Leaves the engine on `doc` for later checks
    (check_migrations, right after this one)."""
    url = make_url(normalize_url(doc.settings.database_url))
    shown = display_url(doc.settings.database_url)
    create = "run `textback db upgrade` (serve does it at start-up): it creates the tables"
    if url.drivername.startswith("sqlite") and (
        not url.database or url.database == ":memory:" or not Path(url.database).exists()
    ):
        return [failed("database", f"no database file at {url.database or shown} (TEXTBACK_DATABASE_URL)", create)]
    try:
        engine = make_engine(doc.settings.database_url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            present = set(inspect(conn).get_table_names())
    except Exception as exc:  # any failure to connect is the finding; its first line says which
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [failed("database", f"cannot reach {shown}: {type(exc).__name__}: {reason}",
                       "check TEXTBACK_DATABASE_URL (host, port, name, user) and that the server is running")]
    doc.engine = engine
    tables = [table.name for table in SQLModel.metadata.sorted_tables]
    missing = [name for name in tables if name not in present]
    if missing and len(missing) < len(tables) and not schema_status(engine).up_to_date:
        # An older schema lacks this release's newer tables: the migrations line says so, with the fix.
        return [ok("database", f"{shown}: reachable, an older textback schema (see migrations)")]
    if missing:
        return [failed("database", f"{shown}: {len(missing)} of {len(tables)} textback tables missing "
                       f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})", create)]
    return [ok("database", f"{shown}: reachable, all {len(tables)} textback tables present")]


def check_migrations(doc: Doctor) -> list[Check]:
    """The database's schema revision is this release's head (none to check when the database check failed)."""
    if doc.engine is None:
        return []
    status = schema_status(doc.engine)
    if status.current is None and not status.legacy:
        return []  # no textback tables at all: the database line already says to run the upgrade
    if status.up_to_date:
        return [ok("migrations", f"schema at revision {status.head} (this release's head)")]
    if status.legacy:
        detail = f"tables made before migrations (no revision); this release's head is {status.head}"
    else:
        detail = f"schema at revision {status.current or 'none'}, this release's head is {status.head}"
    return [failed("migrations", detail,
                   "run `textback db upgrade` (or start `textback serve`, which upgrades under a lock)")]


def check_brokers(doc: Doctor) -> list[Check]:
    """The brokers file serve would read is valid. Leaves the brokers on `doc` for the Twilio checks."""
    path = doc.settings.resolved_brokers_file()
    try:
        doc.brokers = load_brokers(path)
    except ConfigError as exc:
        return [failed("brokers file", str(exc), f"correct {path} (TEXTBACK_BROKERS_FILE)")]
    numbers = ", ".join(b.twilio_number for b in doc.brokers)
    detail = f"{path}: {len(doc.brokers)} broker(s) ({numbers})"
    return [ok("brokers file", detail)]


def check_policies(doc: Doctor) -> list[Check]:
    """Everything `textback policy check` checks, then whether this exact version is approved."""
    policies = doc.settings.policies_dir
    brokers_file = doc.settings.resolved_brokers_file()
    try:
        result = run_check(policies, guard=doc.guard, brokers_file=brokers_file,
                           brokers_optional=brokers_file == Path("brokers.yaml"))
    except Exception as exc:  # an unreadable policies folder: one line, not a traceback
        return [failed("policies", f"{policies}: {type(exc).__name__}: {exc}",
                       "check TEXTBACK_POLICIES_DIR; `textback policy check` shows the details")]
    if not result.ok:
        return [failed("policies", f"{policies}: {len(result.findings)} finding(s); first: {result.findings[0]}",
                       "`textback policy check` lists them all; fix them")]
    lines = [ok("policies", f"{policies}: valid, policy set {result.version}")]
    state = result.approval
    if state is None:  # approvals.yaml unreadable: already a finding above
        return lines
    if state.approved:
        lines.append(ok("policy approval", state.describe().removeprefix(f"policy set {state.version}: ")))
        return lines
    fix = f"review the set (`textback policy report`), then `{approve_command(policies)}`"
    detail = f"policy set {state.version} is not approved"
    if doc.settings.require_approved_policies:
        lines.append(failed("policy approval", detail + ": with TEXTBACK_REQUIRE_APPROVED_POLICIES the service "
                            "refuses to start", fix))
    else:
        lines.append(warning("policy approval", detail + " (production sets TEXTBACK_REQUIRE_APPROVED_POLICIES)",
                             fix))
    return lines


def check_llm(doc: Doctor) -> list[Check]:
    """The LLM endpoint answers for the configured model (a model retrieve: no tokens spent)."""
    settings = doc.settings
    if not settings.llm_enabled:
        return [ok("LLM", "not configured (no OPENAI_API_KEY): replies are read by the rules only")]
    base = settings.openai_base_url or DEFAULT_OPENAI_BASE_URL
    down = ("until it answers, every reply the rules cannot settle goes to a person; check OPENAI_BASE_URL, "
            "the network, or unset OPENAI_API_KEY to run on the rules only")
    client = openai.OpenAI(api_key=settings.openai_api_key, base_url=base, max_retries=0,
                           timeout=httpx.Timeout(LLM_CHECK_TIMEOUT, connect=2.0))
    try:
        client.models.retrieve(settings.llm_model)
    except openai.AuthenticationError:
        return [failed("LLM", f"{base} refused the key (401)", "check OPENAI_API_KEY")]
    except openai.NotFoundError:
        return [failed("LLM", f"{base} has no model {settings.llm_model!r}",
                       "set TEXTBACK_LLM_MODEL to a model the endpoint serves")]
    except openai.APIStatusError as exc:
        return [failed("LLM", f"{base} answered HTTP {exc.status_code}", down)]
    except openai.APIConnectionError as exc:  # APITimeoutError included
        return [failed("LLM", f"cannot reach {base} within {LLM_CHECK_TIMEOUT:g} s ({type(exc).__name__})", down)]
    finally:
        client.close()
    return [ok("LLM", f"{base}: model {settings.llm_model} available")]
