"""How every command's answer is written: ``render`` is the one place that turns data into
JSON, newline-delimited JSON, CSV or text."""

from __future__ import annotations

import csv
import io
import itertools
import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import click

# A streamed table's column widths come from its first rows (as many as this).
TABLE_WINDOW = 1000


class Records(NamedTuple):
    """Rows with named columns: objects in JSON and NL, a header and rows in CSV. The rows
    may be a one-pass iterator: they are rendered as they come."""

    columns: Sequence[str]
    rows: Iterable[Sequence[Any]]

    def objects(self) -> Iterator[dict[str, Any]]:
        return (dict(zip(self.columns, r, strict=True)) for r in self.rows)


def render(data: Any, fmt: str | None, text: Callable[[Any], str]) -> str:
    """``data`` as ``fmt`` asks (``json``, ``nl``, ``csv``), else as ``text(data)``."""
    return "".join(pieces(data, fmt, text))


def emit(data: Any, fmt: str | None = None, text: Callable[[Any], str] = str) -> None:
    """Write ``render(data, fmt, text)`` to stdout, records piece by piece as they come."""
    for piece in pieces(data, fmt, text):
        click.echo(piece, nl=False)


def pieces(data: Any, fmt: str | None, text: Callable[[Any], str]) -> Iterator[str]:
    if isinstance(data, Records):
        if fmt == "json":
            yield from _json_array(data.objects())
        elif fmt == "nl":
            for r in data.objects():
                yield json.dumps({k: jsonable(v) for k, v in r.items()},
                                 ensure_ascii=False) + "\n"
        elif fmt == "csv":
            yield from _csv_lines(data.columns, data.rows)
        elif text is to_table:
            yield from _table_lines(data)
        else:
            yield text(data)
    elif fmt == "json":
        yield to_json(data) + "\n"
    else:
        yield text(data)


def _json_array(objects: Iterable[dict[str, Any]]) -> Iterator[str]:
    """``to_json(list(objects))``, one object at a time."""
    first = True
    for obj in objects:
        yield ("[\n" if first else ",\n") + textwrap.indent(to_json(obj), "  ")
        first = False
    yield "[]\n" if first else "\n]\n"


def lines(items: Iterable[Any]) -> str:
    return "".join(f"{i}\n" for i in items)


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=jsonable)


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return "".join(_csv_lines(columns, rows))


def _csv_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in itertools.chain([columns], rows):
        writer.writerow(["" if v is None else jsonable(v) for v in row])
        if out.tell() > 65536:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def to_table(records: Records) -> str:
    """A plain aligned table (no colour: output is often piped)."""
    return "".join(_table_lines(records))


def _table_lines(records: Records) -> Iterator[str]:
    """Aligned on the widest cells of the first ``TABLE_WINDOW`` rows; later rows follow as
    they come, a longer cell pushing its own line only."""
    rows = iter(records.rows)
    cells = [[str(c) for c in records.columns]]
    cells += [_cells(row) for row in itertools.islice(rows, TABLE_WINDOW)]
    line = "   ".join(f"{{:<{max(map(len, column))}}}" for column in zip(*cells, strict=True))
    yield "".join(line.format(*r).rstrip() + "\n" for r in cells)
    for row in rows:
        yield line.format(*_cells(row)).rstrip() + "\n"


def _cells(row: Sequence[Any]) -> list[str]:
    return [v if type(v) is str else "" if v is None else str(jsonable(v)) for v in row]


__all__ = ["Records", "emit", "jsonable", "lines", "render", "to_csv", "to_json", "to_table"]
