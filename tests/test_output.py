"""One renderer for every command: the same data as JSON, NL, CSV or text."""

from __future__ import annotations

import json

from imagestore.cli.output import Records, render, to_table

RECORDS = Records(("id", "size", "raw"), [("a", 1, b"x\xff"), ("b", None, b"")])


def test_records_render_in_every_format() -> None:
    objects = [{"id": "a", "size": 1, "raw": "x\ufffd"}, {"id": "b", "size": None, "raw": ""}]
    assert json.loads(render(RECORDS, "json", to_table)) == objects
    assert [json.loads(line) for line in render(RECORDS, "nl", to_table).splitlines()] == objects
    assert render(RECORDS, "csv", to_table) == "id,size,raw\na,1,x\ufffd\nb,,\n"
    assert render(RECORDS, None, to_table) == "id   size   raw\na    1      x\ufffd\nb\n"


def test_other_data_is_json_or_the_commands_own_text() -> None:
    data = {"added": 1, "problems": []}
    assert json.loads(render(data, "json", str)) == data
    assert render(data, None, lambda d: f"added {d['added']}\n") == "added 1\n"
    assert render(None, "json", str) == "null\n"


def test_empty_records_still_have_a_header() -> None:
    empty = Records(("a", "b"), [])
    assert render(empty, "csv", to_table) == "a,b\n"
    assert render(empty, "json", to_table) == "[]\n"
    assert render(empty, None, to_table) == "a   b\n"
