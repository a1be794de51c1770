"""Go's ``text/tabwriter``, which the docker CLI lays its tables out with.

A port of the Go standard library's elastic tabstops writer: text is cut into cells at
``\\t`` and ``\\v``; the cells of adjacent lines form a column (a line's last cell, the one its
line break ends, belongs to no column) and are padded to the column's width: the widest cell
plus ``padding``, at least ``minwidth``. ``\\f`` ends every column (a flush); a line without a
tab does too. Widths are counted in runes, as Go does (``utf8.RuneCount``), and the ``0xff``
escape, HTML filtering and every flag behave as in Go.

docker's tables: ``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`` in docker/cli's
``cli/command/formatter/formatter.go`` (``Context.postFormat``), which is what ``table()``
uses by default.

Go computes column widths by recursing once per column; this port finds the same column
blocks in one pass over the lines (a block of column ``j`` is a run of consecutive lines that
each have a cell in column ``j``), so no input makes it recurse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

FILTER_HTML = 1 << 0
STRIP_ESCAPE = 1 << 1
ALIGN_RIGHT = 1 << 2
DISCARD_EMPTY_COLUMNS = 1 << 3
TAB_INDENT = 1 << 4
DEBUG = 1 << 5

ESCAPE = 0xFF
_TAB, _VTAB, _NEWLINE, _FORMFEED = 0x09, 0x0B, 0x0A, 0x0C
_SPECIAL = re.compile(rb"[\t\v\n\f\xff<&]")
_PLAIN_SPECIAL = re.compile(rb"[\t\v\n\f\xff]")

# docker/cli, cli/command/formatter/formatter.go: tabwriter.NewWriter(c.Output, 10, 1, 3, ' ', 0)
DOCKER_TABLE = (10, 1, 3, " ", 0)

Cell = tuple[bytes, int, bool]  # text, width in runes, terminated by a hard tab


def rune_count(data: bytes) -> int:
    """Go's ``utf8.RuneCount``: each valid UTF-8 sequence and each invalid byte is one rune."""
    if data.isascii():
        return len(data)
    try:
        return len(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    count = i = 0
    n = len(data)
    while i < n:
        lead = data[i]
        size = (1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else
                3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 1)
        if size > 1:
            try:
                data[i:i + size].decode("utf-8")  # Go's accept ranges are UTF-8's own
            except UnicodeDecodeError:
                size = 1
        i += size
        count += 1
    return count


class TabWriter:
    """``tabwriter.Writer``: ``write`` any number of times, then ``flush``; ``getvalue``."""

    def __init__(self, minwidth: int, tabwidth: int, padding: int, padchar: str = " ",
                 flags: int = 0) -> None:
        if minwidth < 0 or tabwidth < 0 or padding < 0:
            raise ValueError("negative minwidth, tabwidth, or padding")
        pad = padchar.encode("latin-1")
        if len(pad) != 1:
            raise ValueError("padchar must be one byte")
        self.minwidth, self.tabwidth, self.padding = minwidth, tabwidth, padding
        self.padbyte = pad
        if pad == b"\t":
            flags &= ~ALIGN_RIGHT  # tab padding enforces left-alignment
        self.flags = flags
        self._out = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._cell = bytearray()  # the incomplete cell
        self._pos = 0  # how much of it _width counts
        self._width = 0
        self._end = 0  # the byte that ends the escape or tag we are in, or 0
        self._lines: list[list[Cell]] = [[]]

    # -- input ---------------------------------------------------------------------------
    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        special = _SPECIAL if self.flags & FILTER_HTML else _PLAIN_SPECIAL
        n = i = 0
        while True:
            if self._end == 0:
                m = special.search(data, i)
                if m is None:
                    break
                i = m.start()
                ch = data[i]
                if ch in (_TAB, _VTAB, _NEWLINE, _FORMFEED):
                    self._cell += data[n:i]
                    self._update_width()
                    n = i + 1
                    ncells = self._terminate_cell(ch == _TAB)
                    if ch in (_NEWLINE, _FORMFEED):
                        self._lines.append([])
                        if ch == _FORMFEED or ncells == 1:
                            # A line of one cell shapes no column, so what came before it
                            # can be written now; a formfeed always ends every column.
                            self._flush()
                            if ch == _FORMFEED and self.flags & DEBUG:
                                self._out += b"---\n"
                else:  # the escape byte, or (filtering HTML) a tag or an entity begins
                    self._cell += data[n:i]
                    self._update_width()
                    n = i
                    if ch == ESCAPE:
                        if self.flags & STRIP_ESCAPE:
                            n += 1
                        self._end = ESCAPE
                    else:
                        self._end = ord(">") if ch == ord("<") else ord(";")
                i += 1
            else:
                j = data.find(bytes((self._end,)), i)
                if j < 0:
                    break
                end = j + 1
                if self._end == ESCAPE and self.flags & STRIP_ESCAPE:
                    end = j
                self._cell += data[n:end]
                n = i = j + 1
                self._end_escape()
        self._cell += data[n:]

    def _update_width(self) -> None:
        self._width += rune_count(bytes(self._cell[self._pos:]))
        self._pos = len(self._cell)

    def _end_escape(self) -> None:
        if self._end == ESCAPE:
            self._update_width()
            if not self.flags & STRIP_ESCAPE:
                self._width -= 2  # the escape bytes are not counted
        elif self._end == ord(";"):
            self._width += 1  # an entity counts as one rune
        self._pos = len(self._cell)  # a tag counts as nothing
        self._end = 0

    def _terminate_cell(self, htab: bool) -> int:
        line = self._lines[-1]
        line.append((bytes(self._cell), self._width, htab))
        self._cell, self._pos, self._width = bytearray(), 0, 0
        return len(line)

    # -- output --------------------------------------------------------------------------
    def flush(self) -> None:
        """Lay out and write everything buffered (an unterminated escape counts as ended)."""
        self._flush()

    def _flush(self) -> None:
        if self._cell:
            if self._end:
                self._end_escape()
            self._terminate_cell(False)
        self._format()
        self._reset()

    def _widths(self) -> list[list[int]]:
        """The width of every column cell of every line: each column block's widest cell plus
        padding, at least minwidth (0 for a discardable block when asked)."""
        lines = self._lines
        widths: list[list[int]] = [[0] * max(len(line) - 1, 0) for line in lines]
        open_blocks: list[list[int]] = []  # per column: [first line, width, discardable]

        def close(column: int, block: list[int], end: int) -> None:
            first, width, discardable = block
            if discardable and self.flags & DISCARD_EMPTY_COLUMNS:
                width = 0
            for k in range(first, end):
                widths[k][column] = width

        for i, line in enumerate(lines):
            columns = max(len(line) - 1, 0)
            while len(open_blocks) > columns:
                close(len(open_blocks) - 1, open_blocks.pop(), i)
            for j in range(columns):
                _, width, htab = line[j]
                if j == len(open_blocks):
                    open_blocks.append([i, self.minwidth, 1])
                block = open_blocks[j]
                block[1] = max(block[1], width + self.padding)
                if width > 0 or htab:
                    block[2] = 0
        while open_blocks:
            close(len(open_blocks) - 1, open_blocks.pop(), len(lines))
        return widths

    def _padding(self, textw: int, cellw: int, use_tabs: bool) -> bytes:
        if self.padbyte == b"\t" or use_tabs:
            if self.tabwidth == 0:
                return b""  # tabs have no width: no padding can be done
            cellw = (cellw + self.tabwidth - 1) // self.tabwidth * self.tabwidth
            return b"\t" * ((cellw - textw + self.tabwidth - 1) // self.tabwidth)
        return self.padbyte * (cellw - textw)

    def _format(self) -> None:
        out, flags = self._out, self.flags
        widths = self._widths()
        last = len(self._lines) - 1
        for i, line in enumerate(self._lines):
            use_tabs = bool(flags & TAB_INDENT)
            columns = widths[i]
            for j, (text, width, _) in enumerate(line):
                if j and flags & DEBUG:
                    out += b"|"
                if not text:
                    if j < len(columns):
                        out += self._padding(width, columns[j], use_tabs)
                    continue
                use_tabs = False
                pad = self._padding(width, columns[j], False) if j < len(columns) else b""
                out += (pad + text) if flags & ALIGN_RIGHT else (text + pad)
            if i < last:
                out += b"\n"

    def getvalue(self) -> bytes:
        return bytes(self._out)


def render(text: str, minwidth: int, tabwidth: int, padding: int, padchar: str = " ",
           flags: int = 0) -> str:
    """``text`` written through a new ``TabWriter`` and flushed."""
    writer = TabWriter(minwidth, tabwidth, padding, padchar, flags)
    writer.write(text)
    writer.flush()
    return writer.getvalue().decode("utf-8", "surrogateescape")


def table(rows: Iterable[Sequence[str]], layout: tuple[int, int, int, str, int] = DOCKER_TABLE
          ) -> str:
    """Rows of cells as the docker CLI prints a table: each row's cells joined by tabs, one
    row a line, through a tabwriter (docker's ``10, 1, 3, ' ', 0`` by default)."""
    rows = [tuple(row) for row in rows]
    text = "".join("\t".join(row) + "\n" for row in rows)
    minwidth, _, padding, padchar, flags = layout
    n = len(rows[0]) if rows else 0
    if (not flags and padchar != "\t" and n and all(len(row) == n for row in rows)
            and text.count("\t") == len(rows) * (n - 1) and text.count("\n") == len(rows)
            and not any(c in text for c in ("\v", "\f", "\udcff"))):
        # Every tab and line break is a separator and every row has n cells: one block per
        # column, each cell padded to the column's widest (runes are code points here).
        widths = [max(minwidth, max(len(row[j]) for row in rows) + padding)
                  for j in range(n - 1)]
        return "".join("".join([c.ljust(w, padchar) for c, w in zip(row[:-1], widths,
                                                                   strict=True)])
                       + row[-1] + "\n" for row in rows)
    return render(text, *layout)


__all__ = ["ALIGN_RIGHT", "DEBUG", "DISCARD_EMPTY_COLUMNS", "DOCKER_TABLE", "ESCAPE",
           "FILTER_HTML", "STRIP_ESCAPE", "TAB_INDENT", "TabWriter", "render", "rune_count",
           "table"]
