"""`imagestore inspect` field by field against what Docker 20.10 reported for the same store:
`docker image inspect` (truth/image-inspect.json), the inspect endpoint of the HTTP API
(truth/api/images/<id>.json), the image list endpoint (truth/api/images-json*.json) and the
history endpoint (truth/api/images/<id>.history.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import TRUTH, config, truth_json

import imagestore
from imagestore.service import listing as report

README = Path(__file__).resolve().parent.parent / "README.md"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, which the engine prints for "none"


def _or(default: Any) -> Callable[[Any], Any]:
    return lambda value: default if value is None else value


def _rootfs(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": value["type"]}
    if value["diff_ids"]:
        out["Layers"] = value["diff_ids"]  # `json:",omitempty"`
    return out


# Engine field -> (our key, how our value reads in the engine's terms). Our nulls stand for
# the Go zero values the engine prints: "" for no parent, the zero time for no time.
FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "Id": ("id", _or(None)),
    "RepoTags": ("repo_tags", _or(None)),
    "RepoDigests": ("repo_digests", _or(None)),
    "Parent": ("parent", _or("")),
    "Comment": ("comment", _or(None)),
    "Created": ("created", _or(ZERO_TIME)),
    "Container": ("container", _or(None)),
    "ContainerConfig": ("container_config", _or(None)),
    "DockerVersion": ("docker_version", _or(None)),
    "Author": ("author", _or(None)),
    "Config": ("config", _or(None)),
    "Architecture": ("architecture", _or(None)),
    "Variant": ("variant", _or(None)),
    "Os": ("os", _or(None)),
    "OsVersion": ("os_version", _or(None)),
    "Size": ("size", _or(None)),
    "VirtualSize": ("virtual_size", _or(None)),
    "RootFS": ("rootfs", _rootfs),
    "Metadata": ("last_updated", lambda v: {"LastTagTime": v or ZERO_TIME}),
}
OMIT_EMPTY = {"Variant", "OsVersion"}  # `json:",omitempty"` in types.ImageInspect
# Left out on purpose; the README says why, under the Command line section.
LEFT_OUT = {"GraphDriver"}


def _inspect_all(capsys: pytest.CaptureFixture[str], root: Path) -> dict[str, dict[str, Any]]:
    ids = [t["Id"] for t in truth_json("image-inspect.json")]
    result = run_cli(capsys, root, "inspect", "--json", *ids)
    assert result.code == 0, result.err
    return {d["id"]: d for d in result.json()}


def _engine_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = [("image-inspect.json", t) for t in truth_json("image-inspect.json")]
    docs += [(f"api/images/{p.name}", json.loads(p.read_text()))
             for p in sorted((TRUTH / "api" / "images").glob("*.json"))
             if not p.name.endswith(".history.json")]
    return docs


def test_inspect_answers_every_engine_field(capsys: pytest.CaptureFixture[str],
                                            real_root: Path) -> None:
    ours = _inspect_all(capsys, real_root)
    docs = _engine_documents()
    assert len(docs) == 2 * 39
    for source, engine in docs:
        mine = ours[engine["Id"]]
        assert set(engine) - OMIT_EMPTY <= set(FIELDS) | LEFT_OUT, source
        for field, (key, as_engine) in FIELDS.items():
            expected = engine.get(field, "" if field in OMIT_EMPTY else None)
            assert as_engine(mine[key]) == expected, (source, engine["Id"], field)


def test_comment_and_container_are_the_engines(capsys: pytest.CaptureFixture[str],
                                               real_root: Path) -> None:
    """A committed image's comment is its commit message; an imported one's, the message its
    history keeps; `Container` is the config's "container"."""
    ours = _inspect_all(capsys, real_root)
    by_short = {i[7:19]: d for i, d in ours.items()}
    assert by_short["987adf6212f8"]["comment"] == "manual commit"
    assert by_short["55f3ce50d536"]["comment"] == "devbase rootfs import"
    assert by_short["e167defb12c1"]["comment"] == "busybox 1.35 static"
    assert by_short["19189f98aec7"]["container"] == (
        "97e68dee193545963a4c9b92ba564419d363a8e55bb9d957fa8ee4141607435e")
    assert by_short["55f3ce50d536"]["container"] == ""


def test_inspect_keeps_its_own_fields(capsys: pytest.CaptureFixture[str],
                                      real_root: Path) -> None:
    mine = next(iter(_inspect_all(capsys, real_root).values()))
    assert {"children", "chain_id", "history", "os_features", "last_updated",
            "built_locally"} <= set(mine)
    assert set(mine) == {key for key, _ in FIELDS.values()} | {
        "children", "chain_id", "history", "os_features", "built_locally"}


def _unix(text: str) -> int:
    when = datetime.fromisoformat(text[:19]).replace(tzinfo=timezone.utc)
    return int(when.timestamp())


@pytest.mark.parametrize("name", ["images-json.json", "images-json-all.json",
                                  "images-json-all-shared-size.json", "images-json-dangling.json",
                                  "images-json-all-dangling.json"])
def test_inspect_agrees_with_the_image_list_api(capsys: pytest.CaptureFixture[str],
                                                real_root: Path, name: str) -> None:
    """`Containers` and `SharedSize` (-1: not counted) are about containers and other images,
    not this one; every other field of a listed image is one inspect also gives."""
    ours = _inspect_all(capsys, real_root)
    for item in truth_json(f"api/{name}"):
        mine = ours[item["Id"]]
        assert item["Created"] == _unix(mine["created"])
        assert item["ParentId"] == (mine["parent"] or "")
        assert item["Size"] == item["VirtualSize"] == mine["size"] == mine["virtual_size"]
        assert item["Labels"] == (mine["config"] or {}).get("Labels")
        if item["RepoTags"] == ["<none>:<none>"]:
            assert mine["repo_tags"] == mine["repo_digests"] == []
            assert item["RepoDigests"] == ["<none>@<none>"]
        else:
            assert item["RepoTags"] == mine["repo_tags"]
            assert (item["RepoDigests"] or []) == mine["repo_digests"]


def test_history_agrees_with_the_history_api(capsys: pytest.CaptureFixture[str],
                                             real_root: Path) -> None:
    ours = _inspect_all(capsys, real_root)
    paths = sorted((TRUTH / "api" / "images").glob("*.history.json"))
    assert len(paths) == 39
    for path in paths:
        mine = ours["sha256:" + path.name.split(".")[0]]
        engine = json.loads(path.read_text())
        assert [(h["CreatedBy"], h["Comment"], h["Created"]) for h in engine] == [
            (h.get("created_by", ""), h.get("comment", ""), _unix(h["created"]))
            for h in reversed(mine["history"])]


def test_readme_names_every_field_left_out() -> None:
    text = README.read_text()
    section = text[text.index("## Command line"):]
    section = section[:section.index("\n## ", 1)]
    for field in LEFT_OUT:
        assert f"`{field}`" in section


# -- the rules on configs the real store does not have ---------------------------------------
def _store_image(root: Path, index: Path, raw: bytes) -> dict[str, Any]:
    with imagestore.open(root, index=index) as store:
        return report.inspect(store, store.create(raw))


@pytest.mark.parametrize(("history", "own", "expected"), [
    ([{"comment": "older"}], "own", "own"),
    ([{"comment": "first"}, {"comment": "last"}], "", "last"),
    ([{"comment": "first"}, {"created_by": "x"}], "", ""),
    ([{"comment": "first"}, {"comment": None}], "", ""),
    ([{"Comment": "folded"}], "", "folded"),  # Go matches keys case-insensitively
    ([{"comment": "a", "COMMENT": "b"}], "", "b"),  # and the last match wins
    ([], "", ""),
])
def test_comment_falls_back_to_the_last_history_entry(empty_root: Path, index: Path,
                                                      history: list[dict[str, Any]], own: str,
                                                      expected: str) -> None:
    entries = [{**h, "empty_layer": True} for h in history]
    raw = config(own, history=entries)
    assert _store_image(empty_root, index, raw)["comment"] == expected


def test_container_is_read_as_go_reads_it(empty_root: Path, index: Path) -> None:
    assert _store_image(empty_root, index, config(Container="abc"))["container"] == "abc"
    assert _store_image(empty_root, index, config(container=None))["container"] == ""


def test_tags_and_digests_come_in_the_reference_stores_order(empty_root: Path,
                                                              index: Path) -> None:
    """moby sorts an image's references by their normalised names: docker.io/library/zeta
    comes before localhost/a and registry.example.com/x, whatever their familiar names."""
    with imagestore.open(empty_root, index=index) as store:
        image_id = store.create(config("refs"))
    digest = "sha256:" + "a" * 64
    refs = {"zeta": {"zeta:1": image_id, f"zeta@{digest}": image_id},
            "localhost/a": {"localhost/a:1": image_id},
            "registry.example.com/x": {"registry.example.com/x:1": image_id,
                                       f"registry.example.com/x@{digest}": image_id}}
    (empty_root / "repositories.json").write_text(json.dumps({"Repositories": refs}))
    with imagestore.open(empty_root, index=index) as store:
        data = report.inspect(store, image_id)
    assert data["repo_tags"] == ["zeta:1", "localhost/a:1", "registry.example.com/x:1"]
    assert data["repo_digests"] == [f"zeta@{digest}", f"registry.example.com/x@{digest}"]
