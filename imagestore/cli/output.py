"""How every command's answer is written: ``render`` is the one place that turns data into
JSON, newline-delimited JSON, CSV or text."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import click


class Records(NamedTuple):
    """Rows with named columns: objects in JSON and NL, a header and rows in CSV."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def objects(self) -> Iterable[dict[str, Any]]:
        return (dict(zip(self.columns, r, strict=True)) for r in self.rows)


def render(data: Any, fmt: str | None, text: Callable[[Any], str]) -> str:
    """``data`` as ``fmt`` asks (``json``, ``nl``, ``csv``), else as ``text(data)``."""
    if isinstance(data, Records):
        if fmt == "json":
            return to_json(list(data.objects())) + "\n"
        if fmt == "nl":
            return "".join(json.dumps({k: jsonable(v) for k, v in r.items()},
                                      ensure_ascii=False) + "\n" for r in data.objects())
        if fmt == "csv":
            return to_csv(data.columns, data.rows)
    elif fmt == "json":
        return to_json(data) + "\n"
    return text(data)


def emit(data: Any, fmt: str | None = None, text: Callable[[Any], str] = str) -> None:
    """Write ``render(data, fmt, text)`` to stdout."""
    click.echo(render(data, fmt, text), nl=False)


def lines(items: Iterable[Any]) -> str:
    return "".join(f"{i}\n" for i in items)


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=jsonable)


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else jsonable(v) for v in row])
    return out.getvalue()


def to_table(records: Records) -> str:
    """A plain aligned table (no colour: output is often piped)."""
    cells = [[str(c) for c in records.columns]]
    cells += [[v if type(v) is str else "" if v is None else str(jsonable(v)) for v in row]
              for row in records.rows]
    line = "   ".join(f"{{:<{max(map(len, column))}}}" for column in zip(*cells, strict=True))
    return "".join(line.format(*r).rstrip() + "\n" for r in cells)


__all__ = ["Records", "emit", "jsonable", "lines", "render", "to_csv", "to_json", "to_table"]
