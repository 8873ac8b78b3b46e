"""ASGI entry point for multi-process serving (`textback serve --workers N`, or any ASGI server): configures the
process's logging, then builds the app from the environment's settings. A start-up failure is one line on stderr
and exit status 3, uvicorn's start-up failure (TEXTBACK_DEBUG=1: the traceback), as for `textback serve`."""

from litestar import Litestar

from service.app import create_app
from service.logs import configure_logging
from service.settings import get_settings
from service.startup_errors import guarded, preflight


def _build() -> Litestar:
    settings = get_settings()
    configure_logging(settings.log_level)
    preflight(settings)  # live mode's https public URL, database reachable (the server binds the port)
    return create_app(settings, stop_on_guard_failure=True, freeze_heap=True)


app = guarded(_build)
