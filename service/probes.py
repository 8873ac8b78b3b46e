"""`GET /ready` (the database answers and the work backlog moves) and `GET /metrics` (Prometheus, behind a
token). `GET /health` stays in service.app: the process is up, nothing else."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.datastructures import State

from service import metrics
from service.backlog import Backlog, measure
from service.context import AppContext
from service.db import ping, write_turns
from service.errors import ApiError

AppRequest = Request[Any, Any, State]


def _backlog(ctx: AppContext) -> Backlog:
    return measure(ctx.engine, ctx.spool.directory if ctx.spool is not None else None)


@get("/ready", sync_to_thread=True)
def ready(request: AppRequest) -> Response[dict[str, object]]:
    """Ready: the database answers, no due text, reply or spooled webhook has waited longer than
    TEXTBACK_READY_BACKLOG_SECONDS, and the output guard has not failed (after a restart: it did not load
    within a minute, or disagreed with the kept verdicts). 503 otherwise, the body saying which check failed."""
    ctx: AppContext = request.app.state.ctx
    bound = ctx.settings.ready_backlog_seconds
    checks: dict[str, object] = {"database": "ok"}
    ok = ping(ctx.engine)
    if not ok:
        checks.update(database="unreachable", backlog={"status": "unknown"})
    else:
        try:
            backlog = _backlog(ctx)
        except Exception:  # readiness: a failing query means not ready
            checks.update(database="error", backlog={"status": "unknown"})
            ok = False
        else:
            stuck = backlog.stuck(bound)
            ok = not stuck
            checks["backlog"] = {
                "status": "stuck" if stuck else "ok", "stuck": stuck, "bound_seconds": bound,
                "due_texts": backlog.due_texts, "oldest_due_seconds": backlog.oldest_due_seconds,
                "unprocessed_replies": backlog.unprocessed_replies,
                "oldest_reply_seconds": backlog.oldest_reply_seconds,
                "spooled_files": backlog.spooled_files, "oldest_spool_seconds": backlog.oldest_spool_seconds,
            }
    guard = ctx.guard_state()  # `loading`: texts wait for it (seconds); `failed`: no text is queued, stopping
    checks["output_guard"] = guard
    ok = ok and guard != "failed"
    body: dict[str, object] = {"status": "ready" if ok else "not ready", "checks": checks}
    return Response(content=body, status_code=200 if ok else 503, media_type=MediaType.JSON)


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics_endpoint(request: AppRequest) -> Response[bytes]:
    """Prometheus text exposition. 404 unless TEXTBACK_METRICS_TOKEN is set; then 401 without
    `Authorization: Bearer <that token>`."""
    ctx: AppContext = request.app.state.ctx
    token = ctx.settings.metrics_token
    if not token:
        raise ApiError("not found", status_code=404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError("metrics need Authorization: Bearer <TEXTBACK_METRICS_TOKEN>", status_code=401,
                       headers={"WWW-Authenticate": "Bearer"})
    return Response(content=metrics.exposition(lambda: _backlog(ctx), lambda: write_turns(ctx.engine)),
                    media_type=metrics.CONTENT_TYPE)


ROUTES = [ready, metrics_endpoint]
