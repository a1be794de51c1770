"""Layer file lists in the index: ``layer_files`` and ``layer_file_lists``, keyed by diff ID
(a content-addressed fact shared by every store), and the questions asked of them.

Rows are not a store's: no store's sync or ``forget`` deletes them. ``forget_unheld`` removes
the lists of diff IDs that no store holds any more; the reading of lists calls it, so the
rows left by a deleted layer live until the next ``sync --files`` (the view and every
question here join through ``layers``, so they are never shown). As in ``queries``, every
statement is SQL text that SQLite and PostgreSQL both run, with no colon in a literal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagestore.index.queries import Reader
    from imagestore.index.writes import Writer

FILE_COLUMNS = ("diff_id", "path", "type", "size", "mode", "uid", "gid", "mtime", "link",
                "crc64", "whiteout", "target")
# (path, type, size, mode, uid, gid, mtime, link, crc64, whiteout, target)
FileRow = tuple[str, str, int, int, int, int, int, str | None, str | None, str | None,
                str | None]

_HELD = ("SELECT diff_id FROM layers UNION "
         "SELECT diff_id FROM ctd_layers WHERE diff_id IS NOT NULL")
_UNREAD = ("SELECT l.diff_id, min(l.chain_id) FROM layers l WHERE l.store_id = :s AND "
           "NOT EXISTS (SELECT 1 FROM layer_file_lists r WHERE r.diff_id = l.diff_id) "
           "GROUP BY l.diff_id ORDER BY l.diff_id")
# A chain's layers from the top down: (chain ID, diff ID, depth below the top).
_CHAIN = ("WITH RECURSIVE up(chain_id, diff_id, parent_id, depth) AS ("
          "SELECT chain_id, diff_id, parent_id, 0 FROM layers "
          "WHERE store_id = :s AND chain_id = :c UNION ALL "
          "SELECT l.chain_id, l.diff_id, l.parent_id, up.depth + 1 FROM layers l "
          "JOIN up ON l.store_id = :s AND l.chain_id = up.parent_id WHERE up.depth < 1000) "
          "SELECT chain_id, diff_id FROM up ORDER BY depth DESC")
_ENTRIES = ("SELECT path, type, size, mode, uid, gid, mtime, link, crc64, whiteout, target "
            "FROM layer_files WHERE diff_id = :d ORDER BY path")
_LISTS = "SELECT diff_id, entries, problems FROM layer_file_lists WHERE diff_id = :d"
# Images whose merged filesystem holds a path matching a LIKE pattern, in this store or in
# all: (store, image, path, type, size, layer).
_WHICH = ("SELECT f.store, f.image, f.path, f.type, f.size, f.layer FROM image_files f "
          "WHERE f.path LIKE :p ESCAPE '!' {where} ORDER BY f.store, f.image, f.path")
_TAGS = ("SELECT s.name, t.image_id, t.ref FROM tags t JOIN stores s ON s.id = t.store_id "
         "WHERE NOT t.misfiled {where} ORDER BY t.ref")


def unread_layers(q: Reader) -> list[tuple[str, str]]:
    """(diff ID, one chain ID holding it) of every layer of this store whose list has not
    been read, each diff ID once."""
    return [(r[0], r[1]) for r in q.rows(_UNREAD, {"s": q.store})]


def chain_layers(q: Reader, chain_id: str) -> list[tuple[str, str]]:
    """(chain ID, diff ID) of the layers of a chain, bottom first."""
    return [(r[0], r[1]) for r in q.rows(_CHAIN, {"s": q.store, "c": chain_id})]


def layer_entries(q: Reader, diff_id: str) -> list[FileRow]:
    """Every entry of one layer's list, by path."""
    return [tuple(r) for r in q.rows(_ENTRIES, {"d": diff_id})]


def list_state(q: Reader, diff_id: str) -> tuple[int, list[str]] | None:
    """(entries, problems) of a list that was read, ``None`` for one never read."""
    rows = q.rows(_LISTS, {"d": diff_id})
    if not rows:
        return None
    return int(rows[0][1]), (rows[0][2].split("\n") if rows[0][2] else [])


def which(q: Reader, pattern: str, *, all_stores: bool
          ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
    """(store, image, path, type, size, layer) of every merged entry whose path matches the
    LIKE ``pattern`` (escape ``!``), in this store or in all, through the ``image_files``
    view (the general path: the whole store's merge); and (store, image, ref) of their
    tags."""
    where = "" if all_stores else "AND f.store = (SELECT name FROM stores WHERE id = :s)"
    found = q.rows(_WHICH.format(where=where), {"p": pattern, "s": q.store})
    return found, _tags(q, all_stores)


def _tags(q: Reader, all_stores: bool) -> list[tuple[str, str, str]]:
    tags = q.rows(_TAGS.format(where="" if all_stores else "AND t.store_id = :s"),
                  {"s": q.store})
    return [(r[0], r[1], r[2]) for r in tags]


# -- ``which`` from the path index: the layers holding a path, then the images above them ---
# The same answer as the view, without merging every image: the rows of the path (an exact
# path is one ``(path, diff_id)`` index read, a glob with a literal prefix one range of it),
# the layers holding their diff IDs (``ix_layers_diff``), the chains above those layers
# (``ix_layers_parent``, walked downward) and the images on those chains (``ix_images_chain``).
# An entry is hidden in an image when a layer between it and the image's top holds a row that
# the view's rule says hides it: the same path, a whiteout of the path or of one of its
# folders, an opaque marker of one of its folders. Those rows have known names (``.wh.NAME``
# beside each folder of the path, ``.wh..wh..opq`` in each), so they are one index read too.
CANDIDATES = 20_000  # rows of the path beyond which the view's one pass is the better plan
_BATCHES = (1, 8, 64, 512)  # IN lists padded to these sizes: few distinct statements
_FOUND = ("SELECT path, diff_id, type, size FROM layer_files WHERE whiteout IS NULL AND "
          "{range} AND path LIKE :p ESCAPE '!'")
_HIDING = ("SELECT path, diff_id, whiteout, target, type FROM layer_files "
           "WHERE path IN ({marks})")
_HOLDING = "SELECT store_id, chain_id, diff_id FROM layers WHERE diff_id IN ({marks}) {where}"
_ABOVE = ("SELECT chain_id, diff_id, parent_id FROM layers WHERE store_id = :s AND "
          "parent_id IN ({marks})")
_ON = "SELECT chain_id, id FROM images WHERE store_id = :s AND chain_id IN ({marks})"
_NAMES = "SELECT id, name FROM stores"


def _in(q: Reader, sql: str, values: Sequence[Any], params: dict[str, Any]
        ) -> list[tuple[Any, ...]]:
    """``sql``'s rows for every value, ``{marks}`` being an IN list, in batches of fixed
    sizes (a short one padded with its last value)."""
    out: list[tuple[Any, ...]] = []
    values = list(values)
    for start in range(0, len(values), _BATCHES[-1]):
        part = values[start:start + _BATCHES[-1]]
        size = next(b for b in _BATCHES if b >= len(part))
        part += [part[-1]] * (size - len(part))
        marks = ", ".join(f":v{i}" for i in range(size))
        out += q.rows(sql.format(marks=marks),
                      {**params, **{f"v{i}": v for i, v in enumerate(part)}})
    return out


def hiding_paths(path: str) -> list[str]:
    """The paths of the rows that can hide ``path`` from a layer above: the path itself,
    each of its folders (given there as a file or a link), the whiteout of it and of each of
    its folders, the opaque marker of each folder."""
    parts = path.split("/")
    out = [path]
    for depth in range(len(parts)):
        folder = "/".join(parts[:depth])
        lead = folder + "/" if folder else ""
        if folder:
            out.append(folder)
        out.append(f"{lead}.wh.{parts[depth]}")
        out.append(f"{lead}.wh..wh..opq")
    return out


def _hides(path: str, row: tuple[Any, ...]) -> bool:
    """The view's rule: does row (path, diff ID, whiteout, target, type) of a layer above
    hide the entry ``path``?"""
    if row[0] == path:
        return True
    if row[2] is None:  # an entry: it hides what lies below it unless it is a folder
        return row[4] != "dir" and path.startswith(row[0] + "/")
    kind, target = row[2], row[3]
    if kind not in ("remove", "opaque") or target is None:
        return False
    if (kind == "remove" and target == path) or (kind == "opaque" and target == ""):
        return True
    return path.startswith(target + "/")


def which_indexed(q: Reader, like: str, *, all_stores: bool, low: str | None = None,
                  high: str | None = None, keep: Callable[[str], bool] | None = None
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]] | None:
    """``which``'s answer (same rows, same order) from the path index: the rows of paths
    matching ``like`` within [``low``, ``high``) (``high`` ``None``: the one path ``low``;
    both ``None``: a scan of the index), kept when ``keep(path)``; ``None`` when more than
    ``CANDIDATES`` rows match (the view then answers)."""
    bounds: dict[str, Any] = {}
    if low is not None and high is None:
        where, bounds = "path = :lo", {"lo": low}
    elif low is not None:
        where, bounds = "path >= :lo AND path < :hi", {"lo": low, "hi": high}
    else:
        where = "path >= ''"
    rows = q.rows(_FOUND.format(range=where), {"p": like, **bounds})
    if len(rows) > CANDIDATES:
        return None
    entries = [r for r in rows if keep is None or keep(r[0])]
    if not entries:
        return [], _tags(q, all_stores)
    paths = sorted({r[0] for r in entries})
    hiding: dict[str, set[str]] = {p: set() for p in paths}  # path -> diff IDs hiding it
    wanted: dict[str, list[str]] = {}  # a hiding row's path -> the paths it may hide
    for path in paths:
        for name in hiding_paths(path):
            wanted.setdefault(name, []).append(path)
    for row in _in(q, _HIDING, sorted(wanted), {}):
        for path in wanted.get(row[0], []):
            if _hides(path, row):
                hiding[path].add(row[1])
    by_diff: dict[str, list[tuple[Any, ...]]] = {}
    for r in entries:
        by_diff.setdefault(r[1], []).append(r)
    where = "" if all_stores else "AND store_id = :s"
    starts: dict[int, set[str]] = {}  # store -> chains holding a diff ID of the entries
    chain_diff: dict[tuple[int, str], str] = {}
    for store, chain, diff in _in(q, _HOLDING.format(marks="{marks}", where=where),
                                  sorted(by_diff), {"s": q.store}):
        starts.setdefault(int(store), set()).add(chain)
        chain_diff[int(store), chain] = diff
    names = {int(r[0]): r[1] for r in q.rows(_NAMES, {})}
    found: list[tuple[Any, ...]] = []
    for store, chains in starts.items():
        above: dict[str, list[tuple[str, str]]] = {}  # chain -> (child chain, its diff ID)
        seen = set(chains)
        frontier = sorted(chains)
        while frontier:
            for child, diff, parent in _in(q, _ABOVE, frontier, {"s": store}):
                above.setdefault(parent, []).append((child, diff))
            frontier = sorted({c for c, _ in (x for p in frontier for x in above.get(p, []))}
                              - seen)
            seen.update(frontier)
        images: dict[str, list[str]] = {}
        for chain, image in _in(q, _ON, sorted(seen), {"s": store}):
            images.setdefault(chain, []).append(image)
        for start in sorted(chains):
            for entry in by_diff[chain_diff[store, start]]:
                hidden_by = hiding[entry[0]]
                walk = [start]
                visited = {start}
                while walk:
                    chain = walk.pop()
                    found += [(names[store], image, entry[0], entry[2], entry[3], entry[1])
                              for image in images.get(chain, [])]
                    for child, diff in above.get(chain, []):
                        if diff not in hidden_by and child not in visited:
                            visited.add(child)
                            walk.append(child)
    found.sort(key=lambda r: (r[0], r[1], r[2]))
    return found, _tags(q, all_stores)


def write_list(w: Writer, diff_id: str, rows: Sequence[FileRow], problems: Iterable[str],
               when: str) -> bool:
    """Record one layer's list; ``False`` when another writer recorded it first (a list is
    the same whoever reads it)."""
    shown = "\n".join(problems) or None
    done = w.conn.exec_driver_sql(
        "INSERT INTO layer_file_lists (diff_id, entries, problems, read_at) VALUES "
        f"({', '.join([w.backend.PLACEHOLDER] * 4)}) ON CONFLICT DO NOTHING",
        (diff_id, len(rows), shown, when))
    if done.rowcount == 0:
        return False
    marks = ", ".join([w.backend.PLACEHOLDER] * len(FILE_COLUMNS))
    batch = [(diff_id, *row) for row in rows]
    for start in range(0, len(batch), 5000):
        w.conn.exec_driver_sql(f"INSERT INTO layer_files ({', '.join(FILE_COLUMNS)}) "
                               f"VALUES ({marks})", batch[start:start + 5000])
    return True


def forget_unheld(w: Writer) -> int:
    """Remove the lists of diff IDs that no store of the index holds; how many."""
    w.conn.exec_driver_sql(f"DELETE FROM layer_files WHERE diff_id NOT IN ({_HELD})")
    gone = w.conn.exec_driver_sql(
        f"DELETE FROM layer_file_lists WHERE diff_id NOT IN ({_HELD})")
    return int(gone.rowcount or 0)


__all__ = ["FILE_COLUMNS", "FileRow", "chain_layers", "forget_unheld", "layer_entries",
           "list_state", "unread_layers", "which", "which_indexed", "write_list"]
