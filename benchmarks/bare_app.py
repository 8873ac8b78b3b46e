"""The bare baseline for `compare_bare.py`: the least a missed-call webhook must do, in a bare Litestar app.

One endpoint, ``POST /twilio/voice/dial-status``: parse Twilio's form (application/x-www-form-urlencoded),
check ``X-Twilio-Signature`` with the Twilio SDK's ``RequestValidator`` against the public URL (403 if it does
not match), insert one row with SQLModel (a unique CallSid) and answer TwiML. No policies, no lead, no text:
what any service doing this job with these libraries pays at least.

Run as a process the way `textback serve` runs (uvicorn through ``service.server.run``: the same protocol class,
limits, keep-alive and ``--workers`` supervisor)::

    BARE_DATABASE_URL=sqlite:///bare.db BARE_AUTH_TOKEN=... BARE_PUBLIC_URL=https://... \\
        uv run python benchmarks/bare_app.py --host 127.0.0.1 --port 8001 [--workers 2]

The settings come from the environment when the app starts (never at import), so ``--workers`` processes read
the same ones; ``create_app`` builds one directly (the test does).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
from litestar import Litestar, Request, Response, post
from sqlalchemy import Engine, event
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, create_engine
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PATH = "/twilio/voice/dial-status"
XML = "text/xml"


class BareModel(SQLModel, registry=registry()):
    """Its own metadata: the bare table never joins textback's (migrations, create_all in tests)."""


class BareCall(BareModel, table=True):
    __tablename__ = "bare_call"

    id: int | None = Field(default=None, primary_key=True)
    call_sid: str = Field(unique=True, max_length=64)
    caller: str = Field(max_length=32)
    called: str = Field(max_length=32)
    dial_status: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class BareConfig:
    database_url: str
    auth_token: str
    public_url: str

    @classmethod
    def from_env(cls) -> BareConfig:
        return cls(database_url=os.environ["BARE_DATABASE_URL"], auth_token=os.environ["BARE_AUTH_TOKEN"],
                   public_url=os.environ["BARE_PUBLIC_URL"].rstrip("/"))


def bare_engine(url: str) -> Engine:
    """A plain SQLModel engine; on SQLite the same durability textback uses (WAL, synchronous=NORMAL)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


TWIML = str(VoiceResponse())


def _insert(engine: Engine, form: dict[str, str]) -> None:
    with Session(engine) as session:
        session.add(BareCall(call_sid=form["CallSid"], caller=form["From"], called=form["To"],
                             dial_status=form.get("DialCallStatus", "")))
        session.commit()


@post(PATH, status_code=200, media_type=XML)
async def dial_status(request: Request) -> Response[str]:  # type: ignore[type-arg]
    state = request.app.state
    form = await request.form()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    signature = request.headers.get("x-twilio-signature", "")
    if not state.validator.validate(state.public_url + request.url.path, params, signature):
        return Response(content="forbidden", status_code=403, media_type="text/plain")
    await anyio.to_thread.run_sync(_insert, state.engine, params)
    return Response(content=TWIML, media_type=XML)


def create_app(config: BareConfig | None = None) -> Litestar:
    """The bare app; without `config`, it reads BARE_* from the environment when it starts."""

    def startup(app: Litestar) -> None:
        conf = config or BareConfig.from_env()
        app.state.engine = bare_engine(conf.database_url)
        BareModel.metadata.create_all(app.state.engine)
        app.state.validator = RequestValidator(conf.auth_token)
        app.state.public_url = conf.public_url

    def shutdown(app: Litestar) -> None:
        app.state.engine.dispose()

    return Litestar(route_handlers=[dial_status], on_startup=[startup], on_shutdown=[shutdown], debug=False)


app = create_app()  # what `--workers` processes import: nothing is read until start-up


def main(argv: list[str] | None = None) -> int:
    from service import server
    from service.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8001, type=int)
    parser.add_argument("--workers", default=1, type=int)
    args = parser.parse_args(argv)
    # textback's server settings (connection limits, timeouts, keep-alive) at their defaults; quiet logs.
    settings = Settings(log_level="WARNING")
    target: object = "bare_app:app" if args.workers > 1 else create_app()
    print(f"bare app on http://{args.host}:{args.port}, {args.workers} process(es)", file=sys.stderr, flush=True)
    server.run(target, host=args.host, port=args.port, workers=args.workers, settings=settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
