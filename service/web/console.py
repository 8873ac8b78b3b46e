"""The broker console's pages (/console): sign-in, the inbox and a lead, server-rendered from the same service
functions as the JSON API (service.leads_view), with live fragments the page's script polls.

Sign-in is the one page that needs JavaScript: its script posts the phone and then the texted code to the
auth API (/api/auth/code, /api/auth/session), which sets the session cookie; the page says so when scripts
are off. Reading leads and every action (service.web.console_actions) are plain HTML and forms.
"""

from __future__ import annotations

from litestar import get
from litestar.response import Redirect, Template

from service.web.pages import STATIC, ConsoleRequest, console_router, page, safe_next
from service.web.principal import current_principal


@get("/login", name="console_login")
async def login_page(request: ConsoleRequest) -> Template | Redirect:
    """Sign in: the phone, then the texted code. Already signed in: straight on to `next`."""
    target = safe_next(request.query_params.get("next"))
    principal = await current_principal(request, required=False)
    if principal is not None and principal.kind == "session":
        return Redirect(path=target, status_code=303)
    return page("login.html", {"next": target, "phone": ""})


CONSOLE = console_router([login_page])
ROUTES = [STATIC, CONSOLE]
