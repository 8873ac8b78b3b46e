"""ASGI entry point for multi-process serving (`textback serve --workers N`, or any ASGI server): configures the
process's logging, then builds the app from the environment's settings."""

from service.app import create_app
from service.logs import configure_logging
from service.settings import get_settings

configure_logging(get_settings().log_level)
app = create_app()
