"""ASGI entry point for multi-process serving (`textback serve --workers N`, or any ASGI server)."""

from service.app import create_app

app = create_app()
