"""The Litestar application: create_app() wires the routes, their dependencies (the context and the worker),
the one mapping from errors to HTTP answers, and the lifespan. Logging is the process's: its entry point
(`textback serve`, service.asgi) configures it, never the app."""

from __future__ import annotations

import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response, get, head, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    HTTPException,
    InternalServerException,
    SerializationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service.context import AppContext, build_context
from service.errors import ApiError, BadRequestError, NotStoredError, WebhookError, out_of_range
from service.heap import freeze_started
from service.logs import log, request_id
from service.metrics import WebhookMetrics, failure
from service.probes import ROUTES as PROBE_ROUTES
from service.replay import database_unavailable, spool_webhook
from service.settings import Settings, get_settings
from service.spool import SpoolError
from service.twilio.signature import public_url_for, verify
from service.twilio.webhooks import WEBHOOKS, Handler, offline_answer
from service.web.pages import TEMPLATES
from service.web.routes import ROUTES as WEB_ROUTES
from service.worker import Worker, run_after_commit

logger = logging.getLogger("textback.app")

XML = "application/xml"

# No user, no auth; the app's state holds the context and the worker.
AppRequest = Request[Any, Any, State]
# What a route handler returns. Left as Response[Any]: Litestar documents a typed Response's body in /schema,
# and the published schema stays as it was (no body schema for these answers).
RouteResponse = Response[Any]
CLIENT_GONE = "client disconnected prematurely"  # Litestar's detail when the body's sender disconnects


# msgspec's words for a body decoded straight into a struct (the sign-in routes): the field is in the message.
_MSGSPEC_FIELD = (
    (re.compile(r"Object missing required field `([^`]+)`"), "{0}: Field required"),
    (re.compile(r"Object contains unknown field `([^`]+)`"), "{0}: Extra inputs are not permitted"),
    (re.compile(r"Expected `([^`]+)`, got `([^`]+)` - at `\$\.([^`]+)`"), "{2}: expected {0}, got {1}"),
)


def _body_problem(details: list[dict[str, object]]) -> str | None:
    """The framework's body refusal in words, naming the first field ("until: Input should be a valid string"):
    its own message is "bad request" and the JSON body's missing key reads "'data'"."""
    if not details:
        return None
    key, problem = details[0]["key"], str(details[0]["message"])
    if key in (None, "", "data"):  # the body as a whole, or a field msgspec names inside its message
        if problem == "'data'":
            return "a JSON body is required"
        for pattern, words in _MSGSPEC_FIELD:
            found = pattern.search(problem)
            if found:
                return words.format(*found.groups())
        return "the body must be a JSON object"
    return f"{key}: {problem}"


_INT64 = range(-(2**63), 2**63)
_HUGE_NUMBER = re.compile(r"\d{19,}")


def _out_of_range_answer(request: AppRequest) -> tuple[int, str]:
    """404 naming the thing when a path id is past any stored one; else 422 naming the query parameters that hold
    a number too long for any column."""
    for key, value in request.path_params.items():
        if isinstance(value, int) and value not in _INT64:
            thing = key.removesuffix("_id").replace("_", " ") or "resource"
            return 404, f"{thing} not found"
    named = sorted({key for key, value in request.query_params.items() if _HUGE_NUMBER.search(str(value))})
    return 422, "a number or date in the request is out of range" + (f": {', '.join(named)}" if named else "")


def error_to_response(request: AppRequest, exc: Exception) -> Response[dict[str, object]]:
    """The one place errors become HTTP answers. Bodies never echo request content."""
    details: object | None = None
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, message, details, headers = exc.status_code, str(exc), exc.details, dict(exc.headers)
    elif isinstance(exc, WebhookError):
        status, message = exc.status_code, str(exc)
    elif isinstance(exc, InternalServerException) and exc.detail == CLIENT_GONE:
        # The client went away mid-body (service.server closes a stalled one with 408, and counts it once a
        # minute): nobody to answer, not a server failure. Logged at debug: a slow-client flood is one line a minute.
        log(logger, logging.DEBUG, "request abandoned by the client", path=request.url.path)
        return Response(content={"error": "client disconnected", "status": 408}, status_code=408,
                        media_type=MediaType.JSON)
    elif isinstance(exc, HTTPException):
        # The framework's own refusals keep their status: unknown path 404, wrong method 405, bad JSON 400.
        status = exc.status_code
        message = "bad request" if status == 400 else str(exc.detail or "error")
        if status == 400 and isinstance(exc.extra, list):
            details = [{"key": e.get("key"), "message": e.get("message")} for e in exc.extra if isinstance(e, dict)]
            message = _body_problem(details) or message
        elif status == 400 and (str(exc.detail or "").startswith("JSON is malformed") or (
                isinstance(exc, ClientException) and isinstance(exc.__cause__, SerializationException))):
            # A body the JSON decoder gave up on ("Input data was truncated", bad UTF-8, a lone surrogate).
            message = "the body is not valid JSON (send Content-Type: application/json)"
        headers = dict(exc.headers or {})
    elif out_of_range(exc):
        # An id or date past what can be stored or computed: the input's fault. An id in the path that no row can
        # have ("/api/leads/99999999999999999999") names nothing: 404, as an unknown id.
        status, message = _out_of_range_answer(request)
    elif isinstance(exc, OperationalError):
        status, message = 503, "database unavailable, retry later"
    elif isinstance(exc, SQLAlchemyError):
        status, message = 503, "database error, retry later"
    else:
        status, message = 500, "internal error"
    level = logging.WARNING if status < 500 else logging.ERROR
    if status >= 500:
        failure("http_5xx")
    log(logger, level, "request refused", path=request.url.path, status=status, reason=message,
        exc_type=type(exc).__name__)
    body: dict[str, object] = {"error": message, "status": status}
    if details is not None:
        body["details"] = details
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers or None)


async def _verified_form(request: AppRequest, ctx: AppContext) -> dict[str, str]:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > ctx.settings.max_body_bytes:
        raise BadRequestError("request body too large", status_code=413)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise BadRequestError("expected application/x-www-form-urlencoded", status_code=415)
    raw = await request.body()
    if len(raw) > ctx.settings.max_body_bytes:
        raise BadRequestError("request body too large", status_code=413)
    form = await request.form()
    params: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise BadRequestError("file uploads are not accepted", status_code=415)
        params[key] = value
    url = public_url_for(ctx.settings.public_url, request.url.path, request.url.query)
    verify(token=ctx.settings.signing_token, url=url, params=params,
           signature=request.headers.get("x-twilio-signature"))
    # The query of a URL textback gave Twilio (click-to-call's ?call=<id>) is signed too: handlers read it as
    # form fields (a posted field of the same name wins).
    for key, value in request.query_params.items():
        params.setdefault(key, value)
    # Checked as signed; then NUL goes: PostgreSQL text cannot hold it, and a 503 would make Twilio retry forever.
    return {key: value.replace("\x00", "") for key, value in params.items()}


def ctx_worker(request: AppRequest) -> Worker:
    worker: Worker = request.app.state.worker
    return worker


async def _webhook(request: AppRequest, handler: Handler, media: str) -> Response[str]:
    ctx: AppContext = request.app.state.ctx
    rid = request.headers.get("i-twilio-idempotency-token") or uuid.uuid4().hex[:16]
    request_id.set(rid)
    form = await _verified_form(request, ctx)
    try:
        outcome = await run_after_commit(ctx, handler, form, limiter=getattr(request.app.state, "webhooks", None))
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        # Nothing was committed. Spool the form (replayed once the database is back) and answer from memory,
        # so the caller still rings through; if even the spool fails, the 503 lets Twilio retry.
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: spool_webhook(ctx, request.url.path, form, rid=rid))
        except SpoolError as spool_exc:
            log(logger, logging.ERROR, "webhook not spooled", path=request.url.path, reason=str(spool_exc))
            failure("spool_error")
            raise exc from None
        failure("spooled")
        return Response(content=answer, media_type=media, status_code=200)
    background = None
    if outcome.send_ids or outcome.inbound_ids:
        background = BackgroundTask(ctx_worker(request).after_webhook, outcome.send_ids, outcome.inbound_ids)
    return Response(content=outcome.twiml, media_type=media, status_code=200, background=background)


async def _fallback(request: AppRequest, primary: str) -> Response[str]:
    """Twilio's Fallback URL for a number: called when the primary webhook failed (timeout, 5xx, connection
    refused). Signed against the fallback URL itself. It never touches the database: it spools the form
    (replayed as `primary` by the worker) and answers from memory: voice dials the broker, sms is empty."""
    ctx: AppContext = request.app.state.ctx
    rid = request.headers.get("i-twilio-idempotency-token") or uuid.uuid4().hex[:16]
    request_id.set(rid)
    form = await _verified_form(request, ctx)
    answer = offline_answer(ctx, primary, form)

    def spool() -> None:
        if ctx.spool is None:
            raise SpoolError("no spool configured")
        ctx.spool.append(primary, form, request_id=rid)

    try:
        await anyio.to_thread.run_sync(spool)
    except SpoolError as exc:
        log(logger, logging.ERROR, "fallback webhook not spooled", path=request.url.path, reason=str(exc),
            error_code=form.get("ErrorCode"))
        failure("spool_error")
        if primary != "/twilio/voice":
            raise NotStoredError("cannot store the message, retry later") from None
        # The caller is on the line: ring the broker even though the call could not be recorded.
    else:
        log(logger, logging.WARNING, "fallback webhook spooled", path=request.url.path,
            error_code=form.get("ErrorCode"))
        failure("spooled")
        ctx.wake.set()
    return Response(content=answer, media_type=XML, status_code=200)


@post("/twilio/voice/fallback", name="voice_fallback", summary="Twilio Fallback URL for voice", tags=["twilio"],
      status_code=200, media_type=XML)
async def voice_fallback(request: AppRequest) -> RouteResponse:
    """Rings the broker from the settings in memory; the call is stored when the worker replays the spool."""
    return await _fallback(request, "/twilio/voice")


@post("/twilio/sms/fallback", name="sms_fallback", summary="Twilio Fallback URL for messaging", tags=["twilio"],
      status_code=200, media_type=XML)
async def sms_fallback(request: AppRequest) -> RouteResponse:
    """Accepts the message into the spool (replayed by the worker); answers an empty TwiML response."""
    return await _fallback(request, "/twilio/sms")


def _webhook_route(path: str, handler: Handler) -> HTTPRouteHandler:
    """A thin POST handler: verify, run the webhook handler in one transaction, answer TwiML."""

    async def endpoint(request: AppRequest) -> RouteResponse:
        return await _webhook(request, handler, XML)

    endpoint.__name__ = endpoint.__qualname__ = handler.__name__.removeprefix("handle_")
    endpoint.__doc__ = handler.__doc__
    return post(path, name=endpoint.__name__, summary=f"Twilio webhook {path}", tags=["twilio"],
                status_code=200, media_type=XML)(endpoint)


WEBHOOK_ROUTES = [_webhook_route(path, handler) for path, handler in WEBHOOKS.items()]


@get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@head("/health", name="health_head", include_in_schema=False)
async def health_head() -> None:
    """The process is up (HEAD, as some load balancers probe): 200 without a body."""


ROUTE_HANDLERS = [*WEBHOOK_ROUTES, voice_fallback, sms_fallback, health, health_head, *PROBE_ROUTES, *WEB_ROUTES]
# Counted and timed by service.metrics (the paths Twilio calls; nothing else).
FALLBACK_PATHS = frozenset(["/twilio/voice/fallback", "/twilio/sms/fallback"])
TWILIO_PATHS = frozenset([*WEBHOOKS, *FALLBACK_PATHS])


def create_app(settings: Settings | None = None, *, ctx: AppContext | None = None, run_worker: bool | None = None,
               stop_on_guard_failure: bool = False, freeze_heap: bool = False) -> Litestar:
    """Build the app. Settings (or a ready context, in tests) are passed in, never read at import.
    `stop_on_guard_failure` (service.asgi): the process ends if its output guard fails after start-up.
    `freeze_heap` (service.asgi): start-up's objects leave the garbage collector's passes (service.heap)."""
    settings = settings or (ctx.settings if ctx else get_settings())
    context = ctx or build_context(settings)
    worker = Worker(context)
    start_thread = settings.run_worker if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The webhooks' transactions take turns on their own threads (TEXTBACK_WEBHOOK_THREADS).
        app.state.webhooks = anyio.CapacityLimiter(settings.webhook_threads)
        # Build the output guard and the reply rules before the first webhook (guardrails takes seconds).
        await anyio.to_thread.run_sync(context.warm_up)
        if freeze_heap:
            freeze_started(context)
        if start_thread:
            worker.start()
        elif run_worker is None:  # TEXTBACK_RUN_WORKER=false: the sweep runs elsewhere; the brokers are polled here
            worker.start(sweep=False)
        try:
            yield
        finally:
            worker.stop()
            if ctx is None:
                context.close()

    async def wait_for_guard(request: AppRequest) -> None:
        """A restart's first seconds: a request that may queue a text (anything but GET and HEAD; not the
        fallback URLs, which only spool) waits for the output guard loading in the background before its
        handler opens a transaction."""
        if (request.method not in ("GET", "HEAD") and request.url.path not in FALLBACK_PATHS
                and context.guard_state() == "loading"):
            await anyio.to_thread.run_sync(context.wait_for_guard)

    if stop_on_guard_failure:
        # `serve --workers N` and other ASGI servers: a worker whose guard fails after start-up ends, as it would
        # have refused to start (`serve` itself stops its server through the same hook).
        context.guard_failure_hook = lambda reason: os.kill(os.getpid(), signal.SIGTERM)

    return Litestar(
        route_handlers=ROUTE_HANDLERS,
        before_request=wait_for_guard,
        exception_handlers={Exception: error_to_response},
        lifespan=[lifespan],
        middleware=[DefineMiddleware(WebhookMetrics, paths=TWILIO_PATHS)],
        state=State({"ctx": context, "worker": worker}),
        openapi_config=OpenAPIConfig(title="textback", version="0.1.0", path="/schema"),
        template_config=TEMPLATES,
        # Every body, chunked or not, is read only up to this: past it the request is refused with 413.
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )


__all__ = ["create_app"]
