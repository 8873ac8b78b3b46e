"""`textback serve` and `textback worker`: the process entry points. Each configures the process's logging,
validates the configuration, then runs the app (uvicorn) or the worker. A start-up failure is one or two lines
and exit status 1 (service.startup_errors; the traceback with --debug).

This module is imported only when one of its commands runs (service/cli.py lists the commands without importing
them). The app, the context and the worker are imported where they are built: `serve --workers N` builds none of
them in its supervisor, which only runs the cheap checks (service.startup_errors.preflight, the brokers file's
schema, the policy set's version) and leaves each worker process to build, validate and warm its own context
(service.asgi; a worker that refuses its configuration stops the service with uvicorn's start-up failure)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from service import server, warming
from service.errors import PolicyError
from service.heap import freeze_started
from service.logs import configure_logging
from service.metrics import share_across_workers
from service.resources import startup_lines
from service.settings import describe_invalid, get_settings
from service.startup_errors import preflight, startup_command, where

if TYPE_CHECKING:
    from service.settings import Settings


def _settings() -> Settings:
    """The process's settings, or a one-line error naming each invalid one."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="0: any free port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Service processes sharing the database.")
@startup_command
def serve(host: str, port: int, workers: int) -> None:
    """Run the service (creates or migrates the tables, loads the brokers file)."""
    settings = _settings()
    configure_logging(settings.log_level)
    preflight(settings, host=host, port=port)  # port free, live mode's https public URL, database reachable
    if workers > 1:
        # The supervisor holds no context (hundreds of MiB it would never use): the cheap checks here, the rest
        # in each worker, which refuses a bad template or policy as `serve` does (then the service stops).
        from service.broker_reload import check_file  # lazy: no context in the --workers supervisor
        from service.context import start_policy_version  # lazy: no context in the --workers supervisor

        check_file(settings.resolved_brokers_file(), None, None)
        _banner(settings, host, port, start_policy_version(settings))
        share_across_workers(workers, enabled=bool(settings.metrics_token))
        server.run("service.asgi:app", host=host, port=port, workers=workers, settings=settings)
        return
    # The port answers /health at once (service.warming) while everything is imported and validated here, so a
    # bad brokers file, policy, template or prompt stops start-up with its message (one line from
    # startup_command; --debug: the traceback); then the same socket goes to the app.
    sock = warming.bind(host, port, server.accept_backlog(server.raise_fd_limit()))
    try:
        with warming.answering(sock):
            from service.app import create_app  # lazy: no context in the --workers supervisor
            from service.context import build_context  # lazy: no context in the --workers supervisor

            ctx = build_context(settings)
            try:
                ctx.warm_up()
            except BaseException:
                ctx.close()
                raise
            freeze_started(ctx)  # start-up's objects out of every full garbage collection (service.heap)
    except BaseException:
        sock.close()
        raise
    _banner(settings, host, port, ctx.policy_version)
    share_across_workers(workers, enabled=bool(settings.metrics_token))
    # A guard that loads after serving (a restart) and then fails stops the server, as start-up would have: the
    # server is told to exit (a graceful shutdown) and serve ends with the reason, exit status 1.
    servers: list[Any] = []

    def stop_server(reason: str) -> None:
        for running in servers:
            running.should_exit = True

    def serving(running: Any) -> None:
        servers.append(running)
        if _guard_failed(ctx):  # failed between the check below and this server (never clears a stop)
            running.should_exit = True

    ctx.guard_failure_hook = stop_server
    try:
        _refuse_failed_guard(ctx)
        server.run(create_app(settings, ctx=ctx), host=host, port=port, workers=1, settings=settings, sock=sock,
                   on_server=serving)
    finally:
        ctx.close()
    _refuse_failed_guard(ctx)


def _guard_failed(ctx: Any) -> bool:
    return getattr(ctx._guard, "load_error", None) is not None


def _refuse_failed_guard(ctx: Any) -> None:
    """PolicyError (exit 1, one line) when the output guard failed after start-up answered from kept verdicts."""
    if _guard_failed(ctx):
        raise PolicyError(str(ctx.settings.policies_dir), None, str(ctx._guard.load_error))


def _banner(settings: Settings, host: str, port: int, version: str) -> None:
    mode = "dry-run (no Twilio credentials: texts are printed, not sent)" if settings.dry_run else "live"
    click.echo(f"textback on http://{host}:{port} - {mode}; database {where(settings.database_url)}; "
               f"policy set {version}", err=True)
    for line in startup_lines(settings):  # which policies and prompts: ./policies, the setting or the shipped copy
        click.echo(line, err=True)


@click.command()
@startup_command
def worker() -> None:
    """Run only the background worker (sends due texts, processes replies) against the database."""
    settings = _settings()
    configure_logging(settings.log_level)
    preflight(settings)  # live mode's https public URL, database reachable
    from service.context import build_context  # lazy: no context in the --workers supervisor
    from service.worker import Worker  # lazy: no context in the --workers supervisor

    ctx = build_context(settings)
    ctx.warm_up()  # like serve: a policy, template or broker value the output guard refuses stops start-up
    _ = ctx.extractor  # with an LLM configured: its prompt loads and matches the schema, or no start
    freeze_started(ctx)  # start-up's objects out of every full garbage collection (service.heap)
    runner = Worker(ctx)
    stopping = threading.Event()  # SIGTERM, or a guard failing after start-up (as start-up would have refused)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    ctx.guard_failure_hook = lambda reason: stopping.set()
    if _guard_failed(ctx):
        stopping.set()
    click.echo(f"textback worker pid {os.getpid()}", err=True)
    for line in startup_lines(settings):
        click.echo(line, err=True)
    try:
        if not stopping.is_set():
            runner.start()
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        ctx.close()
    _refuse_failed_guard(ctx)
    sys.exit(0)
