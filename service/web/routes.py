"""Every route of the people's side, collected for create_app (each module lists its own)."""

from __future__ import annotations

from typing import Any

from service.web import auth_api, brokers_api, console, home, leads_api, links, report_api, webhooks_api

ROUTES: list[Any] = [*auth_api.ROUTES, *leads_api.ROUTES, *brokers_api.ROUTES, *console.ROUTES, *webhooks_api.ROUTES,
                     *links.ROUTES, *report_api.ROUTES, *home.ROUTES]
