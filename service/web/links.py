"""`GET /l/<token>`: the link in an alert SMS (service.lead_links). A valid link is used up, signs its phone in
on this device for its one lead (a browser already signed in as that phone, and seeing the lead, keeps its
session) and redirects to the lead's page. Any other token (unknown, used, expired, a lead gone, a phone no
longer a user of its broker) gets the same small page, 410, offering the sign-in page: no hint of which.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.response import Redirect, Template
from sqlmodel import Session

from service.lead_links import redeem
from service.models import Lead
from service.web.pages import SECURITY_HEADERS, page
from service.web.principal import SESSION_COOKIE, resolve, session_cookies, start_session

LinkRequest = Request[Any, Any, State]
# The token is in the URL: nothing is cached, and the next page is not told where the browser came from.
HEADERS = {**SECURITY_HEADERS, "Referrer-Policy": "no-referrer"}


@get("/l/{token:str}", name="lead_link", include_in_schema=False, sync_to_thread=True)
def open_lead_link(request: LinkRequest, token: str) -> Redirect | Template:
    """303 to /console/leads/<id> with a session for that lead, or the 410 'link expired' page."""
    ctx = request.app.state.ctx
    current = resolve(ctx, authorization=None, cookie=request.cookies.get(SESSION_COOKIE))
    with Session(ctx.engine, expire_on_commit=False) as session:
        link = redeem(session, ctx, token)
        lead = session.get(Lead, link.lead_id) if link is not None else None
        if link is None or lead is None:
            return page("link_expired.html", {}, status_code=410)
        target = f"/console/leads/{lead.id}"
        if current is not None and current.phone == link.phone and current.may_see(lead.broker_id, lead.id):
            return Redirect(path=target, status_code=303, headers=HEADERS)
        cookie, stored = start_session(session, phone=link.phone, lead_id=lead.id,
                                       user_agent=request.headers.get("user-agent"))
        session.commit()
    return Redirect(path=target, status_code=303, headers=HEADERS,
                    cookies=session_cookies(cookie, stored.csrf_token, secure=ctx.settings.secure_cookies))


ROUTES = [open_lead_link]
