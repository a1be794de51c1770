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
    try:
        return json.dumps(data, indent=2, ensure_ascii=False, default=jsonable)
    except RecursionError:  # nested deeper than json's recursive encoder goes (a long chain)
        return _deep_json(data)


_END = object()


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return json.dumps(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _deep_json(data: Any) -> str:
    """``json.dumps(data, indent=2, ensure_ascii=False, default=jsonable)``, byte for byte,
    with an explicit stack of open containers instead of recursion."""
    out: list[str] = []
    stack: list[list[Any]] = []  # per open container: items, is an object, depth, first item

    def value(item: Any, depth: int) -> None:
        while True:
            if isinstance(item, dict):
                out.append("{" if item else "{}")
                if item:
                    stack.append([iter(item.items()), True, depth + 1, True])
                return
            if isinstance(item, (list, tuple)):
                out.append("[" if item else "[]")
                if item:
                    stack.append([iter(item), False, depth + 1, True])
                return
            if item is None or isinstance(item, (str, int, float)):
                out.append(json.dumps(item, ensure_ascii=False))
                return
            converted = jsonable(item)
            if converted is item:
                raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")
            item = converted

    value(data, 0)
    while stack:
        frame = stack[-1]
        items: Iterator[Any] = frame[0]
        item: Any = next(items, _END)
        if item is _END:
            stack.pop()
            out.append("\n" + "  " * (frame[2] - 1) + ("}" if frame[1] else "]"))
            continue
        out.append(("\n" if frame[3] else ",\n") + "  " * frame[2])
        frame[3] = False
        if frame[1]:
            key: Any
            key, item = item
            out.append(json.dumps(_key(key), ensure_ascii=False) + ": ")
        value(item, frame[2])
    return "".join(out)



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


__all__ = ["Records", "emit", "jsonable", "lines", "render", "to_json", "to_table"]
