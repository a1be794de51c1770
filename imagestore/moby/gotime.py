"""Go's times, in one place: RFC 3339 as ``time.Time`` parses and marshals it, Unix seconds
and nanoseconds, ``time.ParseDuration``, and docker's ``--filter until=`` timestamps.

Python's ``datetime`` keeps microseconds where Go keeps nanoseconds: what must stay exact
(sorting by the creation instant, ``until``) works on the text or on integer nanoseconds.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from fractions import Fraction

from imagestore.errors import ImageStoreError, InvalidImageConfig

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NS = 1_000_000_000
# Go's zero time.Time (0001-01-01T00:00:00Z) as Unix seconds: docker's "no creation time".
ZERO_UNIX = -62135596800


# Go's RFC 3339 as time.Parse reads it: any number of fraction digits (past nine ignored).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_time(value: str) -> datetime:
    """RFC 3339 (nanoseconds allowed, truncated to microseconds) to an aware datetime.

    The form Docker writes (``2006-01-02T15:04:05.999999999Z``) takes a fast path: a sync
    parses two times per image and ``ls`` one per row. Anything else, or anything the fast
    path doubts, goes through the full parser."""
    fraction = value[20:-1]
    if (value.isascii() and value[-1:] == "Z" and len(value) >= 20 and value[4] == "-"
            and value[7] == "-" and value[10] == "T" and value[13] == ":" and value[16] == ":"
            and (len(value) == 20 if value[19] == "Z" else
                 value[19] == "." and 1 <= len(fraction) <= 9 and fraction.isdigit())):
        try:
            micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
            return datetime.fromisoformat(value[:19]).replace(microsecond=micro,
                                                              tzinfo=timezone.utc)
        except ValueError:
            pass
    return _parse_time(value)


def _parse_time(value: str) -> datetime:
    m = _RFC3339.fullmatch(value)
    if not m:
        raise InvalidImageConfig(f"parsing time {value!r}: not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    zone = m.group(8)
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        # Go accepts offsets up to 24:60 (Python's timezone stops short of 24 h): apply the
        # offset by hand and answer in UTC.
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 24 or minutes > 60:
            raise InvalidImageConfig(f"parsing time {value!r}: time zone offset out of range")
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    try:
        local = datetime(year, month, day, hour, minute, second, micro)
        utc = (local - offset).replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise InvalidImageConfig(f"parsing time {value!r}: {exc}") from None
    if not offset:
        return utc
    try:
        return utc.astimezone(timezone(offset))
    except ValueError:
        return utc


def format_time(when: datetime) -> str:
    """RFC3339Nano in UTC with ``Z``, trailing zero fraction digits trimmed (Go's format)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware value")
    utc = when.astimezone(timezone.utc)
    text = (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
            f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_time(text: str) -> str:
    """A config's RFC 3339 time as Go's ``time.Time`` marshals it back (nanoseconds kept,
    trailing zeros dropped, a zero offset written ``Z``)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text[:60]!r}")
    frac = (m.group(7) or "")[:9].rstrip("0")
    zone = m.group(8)
    zone = "Z" if zone in ("Z", "z") or zone[1:] == "00:00" else zone
    date = "{}-{}-{}T{}:{}:{}".format(*m.groups()[:6])
    return date + ("." + frac if frac else "") + zone


def rfc3339(value: str | None) -> str | None:
    """A stored RFC 3339 time in UTC with ``Z`` (nanoseconds kept as written)."""
    if not value:
        return None
    if value.endswith(("Z", "z")):
        return value[:-1] + "Z"
    return format_time(parse_time(value))


def unix_seconds(when: datetime) -> int:
    """Go's ``Time.Unix()``: whole seconds since the epoch, rounded down."""
    return (when - _EPOCH) // timedelta(seconds=1)


# -- durations and docker's ``--filter until=`` timestamps ---------------------------------
_GO_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 1_000_000, "s": _NS,
             "m": 60 * _NS, "h": 3600 * _NS}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")
_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_ZONE = r"(Z|[+-][0-9]{2}:[0-9]{2})"
_FRACTION = re.compile(r"T[0-9]{2}:[0-9]{2}:[0-9]{2}\.([0-9]{1,9})")


def go_duration(text: str, units: dict[str, int] | None = None) -> int | None:
    """Go's ``time.ParseDuration`` in nanoseconds (``None``: not a duration); ``units``
    adds units of one's own."""
    table = {**_GO_UNITS, **(units or {})}
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if rest == "0":
        return 0
    total, pos = Fraction(0), 0
    while rest and pos < len(rest):
        m = _DURATION_PART.match(rest, pos)
        if m is None or m[1] in ("", ".") or m[2] not in table:
            return None
        total += Fraction(m[1]) * table[m[2]]
        pos = m.end()
    return sign * int(total) if rest and abs(total) < 1 << 63 else None


def unix_ns(text: str | None) -> int | None:
    """An RFC 3339 time as Unix nanoseconds (Go keeps nanoseconds; ``datetime`` does not)."""
    if not text:
        return None
    try:
        when = parse_time(text)
    except InvalidImageConfig:
        return None
    fraction = _FRACTION.search(text)
    seconds = (when.replace(microsecond=0) - _EPOCH) // timedelta(seconds=1)
    return seconds * _NS + (int(fraction[1].ljust(9, "0")) if fraction else 0)


def go_timestamp(value: str, now: datetime) -> int:
    """moby's ``GetTimestamp`` then ``ParseTimestamps`` (api/types/time): a duration before
    ``now`` (whole seconds), an RFC 3339-like time (the daemon's local zone when it names
    none), or Unix seconds; as Unix nanoseconds. ``ImageStoreError`` when it is none."""
    duration = go_duration(value) if value != "0" else None
    if duration is not None:
        return ((now - _EPOCH) // timedelta(microseconds=1) * 1000 - duration) // _NS * _NS
    local = not (any(c in value for c in "zZ+") or value.count("-") == 3)
    zone = "" if local else _ZONE
    if "." in value:
        form = rf"{_DATE}T([0-9]{{2}}):([0-9]{{2}}):([0-9]{{2}})(?:\.[0-9]{{1,9}})?{zone}"
    elif "T" in value:
        colons = value.count(":") - (0 if local or "Z" in value.upper() else 1)
        form = _DATE + "T([0-9]{2})" + ("" if colons < 1 else ":([0-9]{2})") + \
            ("" if colons < 2 else r":([0-9]{2})(?:\.[0-9]{1,9})?") + zone
    else:
        form = _DATE + zone
    m = re.fullmatch(form, value)
    if m is None:
        if "-" in value or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
            raise ImageStoreError(f"failed to parse value as time or duration: {value!r}")
        seconds, _, fraction = value.partition(".")
        return int(seconds) * _NS + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
    if local:
        text = m[0] if "T" in m[0] else m[0] + "T00"
        text += ":00" * (2 - text.count(":"))
        offset = now.astimezone().strftime("%z")
        text += f"{offset[:3]}:{offset[3:]}"
    else:
        head = m[0][:len(m[0]) - len(m[m.lastindex or 0])]
        head = head if "T" in head else head + "T00"
        text = head + ":00" * (2 - head.count(":")) + m[m.lastindex or 0]
    ns = unix_ns(text)
    if ns is None:
        raise ImageStoreError(f"failed to parse value as time or duration: {value!r}")
    return ns


__all__ = ["ZERO_UNIX", "format_time", "go_duration", "go_time", "go_timestamp", "parse_time",
           "rfc3339", "unix_ns", "unix_seconds"]
