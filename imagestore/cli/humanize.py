"""docker's ways of writing sizes, ages and times, for tables people read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from imagestore.errors import InvalidImageConfig
from imagestore.moby.gotime import ZERO_UNIX, parse_time, unix_seconds


def human_size(size: float, precision: int = 3) -> str:
    """docker's ``units.HumanSizeWithPrecision(size, precision)``: decimal units; listings
    use 3 significant digits, ``units.HumanSize`` (prune's total) 4."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{units[i]}"


# Go's time.Duration: int64 nanoseconds; time.Time.Sub saturates at its bounds.
_SECOND, _MINUTE, _HOUR = 1_000_000_000, 60_000_000_000, 3_600_000_000_000
_MIN_DURATION, _MAX_DURATION = -(1 << 63), (1 << 63) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _go_div(a: int, b: int) -> tuple[int, int]:
    """Go's integer ``/`` and ``%``: the quotient truncated toward zero."""
    q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    return q, a - q * b


def _go_float(d: int, unit: int) -> float:
    """``Duration.Seconds()``/``Minutes()``/``Hours()``: whole units plus the fraction."""
    whole, rest = _go_div(d, unit)
    return float(whole) + float(rest) / float(unit)


def human_duration(d: int) -> str:
    """go-units' ``HumanDuration(d)`` for a ``time.Duration`` in nanoseconds (docker/go-units
    duration.go, v0.4.0 as vendored by docker/cli 20.10; unchanged since). Go's ``int(x)``
    truncates toward zero, as Python's does; hours are rounded half up before the day, week
    and month steps, and years count whole hours."""
    seconds = int(_go_float(d, _SECOND))
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(_go_float(d, _MINUTE))
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(_go_float(d, _HOUR) + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(_go_float(d, _HOUR)) // 24 // 365} years"


def human_since(when: str | None, now: datetime | None = None) -> str:
    """The CREATED column of ``docker images``: ``units.HumanDuration(time.Now().UTC().Sub(
    time.Unix(created, 0))) + " ago"``, and "N/A" for the zero time (docker/cli 20.10,
    cli/command/formatter/image.go: ``CreatedSince`` answers "" for it and the table's
    ``{{if .CreatedSince}}...{{else}}N/A{{end}}`` prints N/A). The API hands the CLI whole
    Unix seconds, so the age is counted from the creation second, not the instant."""
    if not when:
        return "N/A"  # no creation time: Go's zero time
    created = unix_seconds(parse_time(when))
    if created == ZERO_UNIX:
        return "N/A"
    now = now or datetime.now(timezone.utc)
    d = (now - _EPOCH) // timedelta(microseconds=1) * 1000 - created * _SECOND
    return human_duration(min(max(d, _MIN_DURATION), _MAX_DURATION)) + " ago"


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


__all__ = ["human_duration", "human_since", "human_size", "since_formatter"]
