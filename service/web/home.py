"""`GET /`: a small page saying the service runs and pointing to the console and to /health (no data of any
broker or borrower, no setting). `HEAD /` answers the same status without the page, for probes."""

from __future__ import annotations

from litestar import get, head
from litestar.response import Template

from service.web.pages import page


@get("/", name="home", include_in_schema=False)
async def home() -> Template:
    """The home page: links to /console and /health."""
    return page("home.html", {})


@head("/", name="home_head", include_in_schema=False)
async def home_head() -> None:
    """HEAD /: 200 without a body."""


ROUTES = [home, home_head]
