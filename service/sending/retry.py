"""How long a text that failed waits before it is tried again: exponential, capped at 5 min, jittered."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.context import AppContext


def backoff(ctx: AppContext, attempts: int) -> timedelta:
    base = ctx.settings.send_retry_base_seconds * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=min(base, 300) * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
