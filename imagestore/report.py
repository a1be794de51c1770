"""Reporting over the index: docker-style listings, inspect documents, the parent forest,
read-only SQL, and the output formats (table, JSON, newline-delimited JSON, CSV).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import exists, select, text

from imagestore import db, schema
from imagestore.errors import ImageStoreError, InvalidImageConfig
from imagestore.image import format_time, parse_time
from imagestore.store import Store

Row = dict[str, Any]


# -- docker images -------------------------------------------------------------------------
def image_rows(store: Store, *, all_images: bool = False, dangling: bool = False) -> list[Row]:
    """The rows ``docker images`` prints: one per tag; untagged heads; ``-a`` adds the rest.

    An image is "tagged" when any reference names it; ``dangling`` means untagged heads.
    """
    t, p, lt, tt = schema.images, schema.parents, schema.layers, schema.tags
    child = schema.parents.alias("child")
    is_head = ~exists().where(child.c.parent_id == t.c.id)
    tagged_image = exists().where(tt.c.image_id == t.c.id)
    query = (
        select(t.c.id, t.c.created, p.c.parent_id, lt.c.size, is_head.label("head"))
        .outerjoin(p, p.c.child_id == t.c.id)
        .outerjoin(lt, lt.c.chain_id == t.c.chain_id)
    )
    # Let the database drop what will not be listed (most images are intermediates).
    if dangling:
        query = query.where(is_head, ~tagged_image)
    elif not all_images:
        query = query.where(is_head | tagged_image)
    refs_query = select(tt.c.image_id, tt.c.repository, tt.c.tag).order_by(tt.c.repository,
                                                                            tt.c.tag)
    images, tag_rows = store.fetch(query, refs_query)
    refs: dict[str, list[tuple[str | None, str | None]]] = {}
    for image_id, repository, tag in tag_rows:
        refs.setdefault(image_id, []).append((repository, tag))
    rows: list[Row] = []
    for image_id, created, parent_id, size, head in images:
        names = refs.get(image_id, [])
        if dangling and (names or not head):
            continue
        if not names and not head and not all_images:
            continue
        base = {"id": image_id, "repository": None, "tag": None, "created": _rfc3339(created),
                "size": int(size or 0), "parent": parent_id}
        if not names:  # most rows: one, untagged
            rows.append(base)
            continue
        tagged: list[tuple[str | None, str | None]] = [
            (repo, tag) for repo, tag in names if tag is not None]
        if not tagged:  # digest-only references show as repo <none>
            tagged = sorted({(repo, None) for repo, _ in names})
        rows.extend({**base, "repository": repo, "tag": tag} for repo, tag in tagged)
    rows.sort(key=lambda r: (r["created"] or "", r["repository"] or "", r["tag"] or ""),
              reverse=True)
    return rows


def _rfc3339(value: str | None) -> str | None:
    """A stored RFC 3339 time in UTC with ``Z`` (nanoseconds kept as written)."""
    if not value:
        return None
    if value.endswith(("Z", "z")):
        return value[:-1] + "Z"
    return format_time(parse_time(value))


# -- docker image inspect ------------------------------------------------------------------
def inspect(store: Store, image_id: str) -> Row:
    image = store.get(image_id)
    t = schema.images
    with store.engine.connect() as conn:
        meta = conn.execute(select(t.c.last_updated, t.c.built_locally)
                            .where(t.c.id == image.id)).one()
    return {
        "id": image.id,
        "repo_tags": store.references(image_id),
        "parent": image.parent,
        "children": store.children(image_id),
        "created": _rfc3339(image.created_text),
        "author": image.author,
        "comment": image.comment,
        "docker_version": image.docker_version,
        "os": image.os,
        "os_version": image.os_version,
        "os_features": image.os_features,
        "architecture": image.architecture,
        "variant": image.variant,
        "size": store.size(image_id),
        "chain_id": image.chain_id,
        "rootfs": {"type": image.rootfs.type, "diff_ids": image.rootfs.diff_ids},
        "history": image.history,
        "config": image.config,
        "container_config": image.container_config,
        "last_updated": _rfc3339(meta.last_updated),
        "built_locally": bool(meta.built_locally),
    }


# -- the parent forest ---------------------------------------------------------------------
@dataclass
class Node:
    id: str
    tags: list[str]
    children: list[Node]

    def to_dict(self) -> Row:
        return {"id": self.id, "tags": self.tags, "children": [c.to_dict() for c in self.children]}


def forest(store: Store) -> list[Node]:
    """Roots (images whose parent is absent from the store) with their descendants."""
    t, p, tt = schema.images, schema.parents, schema.tags
    with store.engine.connect() as conn:
        ids = list(conn.scalars(select(t.c.id).order_by(t.c.id)))
        edges = conn.execute(select(p.c.child_id, p.c.parent_id)).all()
        refs: dict[str, list[str]] = {}
        for r in conn.execute(select(tt.c.image_id, tt.c.ref).order_by(tt.c.ref)):
            refs.setdefault(r.image_id, []).append(r.ref)
    nodes = {i: Node(i, refs.get(i, []), []) for i in ids}
    has_parent = set()
    for child, parent in sorted(edges):
        if parent in nodes and child in nodes:
            nodes[parent].children.append(nodes[child])
            has_parent.add(child)
    return [nodes[i] for i in ids if i not in has_parent]


def draw_forest(roots: Sequence[Node]) -> list[str]:
    """Text drawing. A chain of only children stays in one column (so 20+ deep chains stay
    readable); only a branch point indents, with ├── / └── before each branch."""
    lines: list[str] = []

    def label(node: Node) -> str:
        short = node.id.split(":", 1)[1][:12]
        return f"{short}  {', '.join(node.tags)}" if node.tags else short

    def walk(node: Node, first: str, rest: str) -> None:
        # Iterative down single-child chains: recursion depth grows only at branches.
        lines.append(first + label(node))
        while len(node.children) == 1:
            node = node.children[0]
            lines.append(rest + label(node))
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            walk(child, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "))

    for i, root in enumerate(roots):
        if i:
            lines.append("")  # a blank line between trees: a root never reads as a child
        walk(root, "", "")
    return lines


# -- read-only SQL -------------------------------------------------------------------------
_ALLOWED_START = re.compile(r"\s*(select|with|values|explain)\b", re.IGNORECASE)
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _strip_comments(sql: str) -> str:
    return re.sub(r"(--[^\n]*\n?)|(/\*.*?\*/)", " ", sql, flags=re.DOTALL)


Result = tuple[list[str], list[tuple[Any, ...]]]


def run_sql(store: Store, query: str, params: Sequence[Any] = ()) -> Result:
    """Run one read-only statement on the index; anything else is refused, nothing written."""
    body = _strip_comments(query).strip().rstrip(";").strip()
    if not _ALLOWED_START.match(body):
        raise ImageStoreError(
            "sql: only a single SELECT / WITH / VALUES / EXPLAIN statement is allowed")
    path = db.sqlite_path(str(store.engine.url))
    if path is None:
        return _run_sql_generic(store, body, params)
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        def authorizer(action: int, *_args: object) -> int:
            return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY

        conn.set_authorizer(authorizer)
        try:
            cur = conn.execute(body, tuple(params))
            columns = [d[0] for d in cur.description or ()]
            return columns, cur.fetchall()
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise ImageStoreError(f"sql: {exc}") from None
    finally:
        conn.close()


def _run_sql_generic(store: Store, body: str, params: Sequence[Any]) -> Result:
    if ";" in body:
        raise ImageStoreError("sql: only a single statement is allowed")
    if params:
        raise ImageStoreError("sql: -p placeholders need an SQLite index")
    with store.engine.connect() as conn:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        try:
            result = conn.execute(text(body))
        except Exception as exc:
            raise ImageStoreError(f"sql: {exc}") from None
        columns = list(result.keys())
        rows = [tuple(r) for r in result]
        conn.rollback()
    return columns, rows


# -- formats -------------------------------------------------------------------------------
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


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=jsonable)


def to_nl(rows: Iterable[Row]) -> str:
    return "".join(json.dumps({k: jsonable(v) for k, v in r.items()}, ensure_ascii=False) + "\n"
                   for r in rows)


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else jsonable(v) for v in row])
    return out.getvalue()


def to_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned table (no colour: output is often piped, and NO_COLOR is honoured)."""
    cells = [[str(c) for c in columns]]
    cells += [[v if type(v) is str else "" if v is None else str(jsonable(v)) for v in row]
              for row in rows]
    line = "   ".join(f"{{:<{max(map(len, column))}}}" for column in zip(*cells, strict=True))
    return "".join(line.format(*r).rstrip() + "\n" for r in cells)


__all__ = [
    "Node",
    "draw_forest",
    "forest",
    "human_since",
    "human_size",
    "image_rows",
    "inspect",
    "run_sql",
    "since_formatter",
    "to_csv",
    "to_json",
    "to_nl",
    "to_table",
]
