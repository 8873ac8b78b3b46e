"""A broker's working hours as written in the brokers file: one opening range per weekday, plus holidays.

```yaml
hours:
  mon: "09:00-17:30"
  tue: "09:00-17:30"
  sat: "10:00-13:00"      # a day that is not listed is closed
  holidays: ["2026-12-25", "2027-01-01"]
```

Times are in the broker's own time zone (`timezone:`). A range must open before it closes (no overnight ranges).
"""

from __future__ import annotations

import re
from datetime import date, time

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def parse_range(value: str) -> tuple[time, time]:
    """"09:00-17:30" -> (09:00, 17:30); "24:00" closes at midnight. ValueError names the expected form."""
    match = _RANGE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        msg = f"{value!r} is not an opening range like \"09:00-17:30\""
        raise ValueError(msg)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2:
        msg = f"{value!r}: a day ends at 24:00"
        raise ValueError(msg)
    start = time(h1, m1)
    end = time.max if h2 == 24 else time(h2, m2)
    if end <= start:
        msg = f"{value!r}: opens after it closes (ranges cannot run past midnight)"
        raise ValueError(msg)
    return start, end


class HoursConfig(BaseModel):
    """Opening range per weekday (absent = closed) and holiday dates (closed all day)."""

    model_config = ConfigDict(extra="forbid")

    mon: str | None = None
    tue: str | None = None
    wed: str | None = None
    thu: str | None = None
    fri: str | None = None
    sat: str | None = None
    sun: str | None = None
    holidays: list[date] = Field(default_factory=list)

    @field_validator(*DAYS)
    @classmethod
    def _check_range(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_range(value)
        return value.strip()

    def ranges(self) -> dict[int, tuple[time, time]]:
        """Weekday number (Monday 0) -> opening range, for the days that open."""
        out: dict[int, tuple[time, time]] = {}
        for number, day in enumerate(DAYS):
            value = getattr(self, day)
            if value:
                out[number] = parse_range(value)
        return out
