"""docker's ways of writing sizes, ages and times, for tables people read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from imagestore.errors import InvalidImageConfig
from imagestore.moby.image import format_time, parse_time


def rfc3339(value: str | None) -> str | None:
    """A stored RFC 3339 time in UTC with ``Z`` (nanoseconds kept as written)."""
    if not value:
        return None
    if value.endswith(("Z", "z")):
        return value[:-1] + "Z"
    return format_time(parse_time(value))


def human_size(size: float) -> str:
    """docker's ``units.HumanSizeWithPrecision(size, 3)``: decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def human_since(when: str | None, now: datetime | None = None) -> str:
    """docker's ``units.HumanDuration`` + " ago"."""
    if not when:
        return "N/A"
    now = now or datetime.now(timezone.utc)
    seconds = (now - parse_time(when)).total_seconds()
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 60:
        s = int(seconds)
        return "1 second ago" if s == 1 else f"{s} seconds ago"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute ago" if int(minutes) == 1 else f"{int(minutes)} minutes ago"
    hours = minutes / 60
    if hours < 1.5:
        return "About an hour ago"
    if hours < 48:
        return f"{round(hours)} hours ago"
    if hours < 24 * 7 * 2:
        return f"{int(hours / 24)} days ago"
    if hours < 24 * 30 * 2:
        return f"{int(hours / 24 / 7)} weeks ago"
    if hours < 24 * 365 * 2:
        return f"{int(hours / 24 / 30)} months ago"
    return f"{int(hours / 24 / 365)} years ago"


def since_formatter(now: datetime | None = None) -> Callable[[str | None], str]:
    """``human_since`` for many times against one ``now`` (``ls`` formats one per row).

    Ages only grow through distinct strings ("2 days", ..., "2 weeks", ...), so when the
    first and the last instant of a day read the same, every instant of that day does: one
    answer per day is computed, and only days that straddle a change go time by time."""
    now = now or datetime.now(timezone.utc)
    days: dict[str, str | None] = {}

    def since(when: str | None) -> str:
        if not when or len(when) < 20 or when[10] != "T" or when[-1] != "Z":
            return human_since(when, now)
        day = when[:10]
        if day not in days:
            try:
                first = human_since(day + "T00:00:00Z", now)
                last = human_since(day + "T23:59:59.999999999Z", now)
            except InvalidImageConfig:
                first, last = "", None
            days[day] = first if first == last else None
        return days[day] or human_since(when, now)

    return since


__all__ = ["human_since", "human_size", "rfc3339", "since_formatter"]
