"""``store.images`` is docker-py's ``client.images`` offline: the same calls, given to the
``docker`` package against a real dockerd on one copy of a BuildKit-built data-root and to
imagestore on a second copy, answer the same and leave the same files. ``list``, ``get``
and ``history`` are judged in test_engine_api; here the calls that change a store."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine import ROOT_A, Engine
from test_engine_api import _make_images
from test_prune import disk, newest_created, unpack

import imagestore
from imagestore.service.host import Host

docker = pytest.importorskip("docker")
BUILDKIT = ROOT_A.with_name("root-A-buildkit.tar.xz")


class Pair:
    """The engine (through docker-py) and imagestore, each on its own copy (``made``: the
    odd configs of test_engine_api added to both first)."""

    def __init__(self, tmp_path: Path, *, made: bool = False) -> None:
        self.theirs_root = unpack(BUILDKIT, tmp_path / "engine")
        self.ours_root = unpack(BUILDKIT, tmp_path / "ours")
        if made:
            for data_root in (self.theirs_root, self.ours_root):
                _make_images(data_root)
        self.engine = Engine(self.theirs_root).start()
        self.client = docker.DockerClient(base_url=f"unix://{self.engine.sock}")
        self.store: Host = imagestore.open(self.ours_root / "image" / "vfs",
                                           tmp_path / "index.sqlite")

    def close(self) -> None:
        self.store.close()
        self.client.close()
        self.engine.stop()

    def remove(self, image: str, **kwargs: Any) -> tuple[str, Any]:
        """docker-py's ``images.remove`` discards the engine's items: ask the API for them."""
        api = self.client.api
        try:
            response = api._delete(api._url("/images/{0}", image),
                                   params={"force": kwargs.get("force", False),
                                           "noprune": kwargs.get("noprune", False)})
            return "ok", api._result(response, True)
        except docker.errors.ImageNotFound as exc:
            return "not found", exc.explanation
        except docker.errors.APIError as exc:
            return ("conflict" if exc.status_code == 409 else "error"), exc.explanation

    def remove_ours(self, image: str, **kwargs: Any) -> tuple[str, Any]:
        try:
            return "ok", self.store.images.remove(image, **kwargs)
        except imagestore.ImageNotFound as exc:
            return "not found", str(exc)
        except imagestore.ImageConflict as exc:
            return "conflict", str(exc)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    both = Pair(tmp_path)
    try:
        yield both
    finally:
        both.close()


REMOVALS: list[tuple[str, dict[str, bool]]] = [
    ("devbase:1.0", {}),  # another tag remains: untag only
    ("bb:1.35", {}),  # a stopped container uses it
    ("55f3ce50d536", {}),  # one tag left, children: cannot be forced
    ("55f3ce50d536", {"force": True}),
    ("web:prod", {"noprune": True}),  # its untagged parents stay
    ("web:1.0", {}),  # untagged, but a child keeps the image
    ("e167defb12c1", {}),  # a stopped container: must be forced
    ("tool:1.0", {"force": True}),
    ("nope:1", {}),
    ("api:1.0", {}),  # another repository still names it
    ("registry.example.com/team/api:1.0", {}),
    ("bk:1", {}),  # BuildKit's layers stay, as the engine keeps them
]


def test_remove_answers_conflicts_and_deletes_as_the_engine(pair: Pair) -> None:
    for image, kwargs in REMOVALS:
        theirs, ours = pair.remove(image, **kwargs), pair.remove_ours(image, **kwargs)
        assert ours[0] == theirs[0], (image, kwargs, ours, theirs)
        if theirs[0] == "ok":
            assert ours[1] == theirs[1], (image, kwargs)
        else:
            assert ours[1] == theirs[1], (image, kwargs)
        assert disk(pair.ours_root) == disk(pair.theirs_root), (image, kwargs)


def prune_steps(newest: Any) -> list[dict[str, Any]]:
    from datetime import datetime, timedelta, timezone

    age = datetime.now(timezone.utc) - newest - timedelta(hours=1)
    return [
        {"dangling": True},
        {"dangling": False, "label": ["org.example.app=web"], "until": "2026-11-30T00:04:40Z"},
        {"dangling": False, "label!": "org.example.builder"},
        {"dangling": False, "until": f"{int(age.total_seconds())}s"},
        {"dangling": False},
    ]


def _items(report: dict[str, Any]) -> tuple[set[str], set[str], int]:
    items = report["ImagesDeleted"] or []
    return ({i["Untagged"] for i in items if "Untagged" in i},
            {i["Deleted"] for i in items if "Deleted" in i}, report["SpaceReclaimed"])


def test_prune_answers_as_the_engine(pair: Pair) -> None:
    for filters in prune_steps(newest_created(pair.theirs_root)):
        theirs = pair.client.images.prune(filters=filters)
        ours = pair.store.images.prune(filters=filters)
        assert set(ours) == set(theirs) == {"ImagesDeleted", "SpaceReclaimed"}
        assert _items(ours) == _items(theirs), filters
        assert (ours["ImagesDeleted"] is None) == (theirs["ImagesDeleted"] is None), filters
        assert disk(pair.ours_root) == disk(pair.theirs_root), filters
    with pytest.raises(docker.errors.APIError) as theirs_error:
        pair.client.images.prune(filters={"nope": "1"})
    with pytest.raises(imagestore.ImageStoreError) as ours_error:
        pair.store.images.prune(filters={"nope": "1"})
    assert str(ours_error.value) == theirs_error.value.explanation == "Invalid filter 'nope'"


def test_prune_reads_labels_as_go_decodes_the_config(tmp_path: Path) -> None:
    """A repeated ``config`` key merges into one Config (its labels survive a later
    ``config`` without them); a null label value is a label."""
    pair = Pair(tmp_path, made=True)
    try:
        for filters in ({"dangling": False, "label": "x=2"}, {"label": "e"},
                        {"dangling": False, "label!": "x"}):
            theirs = pair.client.images.prune(filters=filters)
            ours = pair.store.images.prune(filters=filters)
            assert _items(ours) == _items(theirs), filters
            assert disk(pair.ours_root) == disk(pair.theirs_root), filters
    finally:
        pair.close()


def test_a_dry_run_prunes_nothing_and_plans_what_the_run_does(pair: Pair) -> None:
    before = disk(pair.ours_root)
    planned = pair.store.images.prune(filters={"dangling": False}, dry_run=True)
    assert disk(pair.ours_root) == before
    done = pair.store.images.prune(filters={"dangling": False})
    assert _items(planned) == _items(done) == _items(
        pair.client.images.prune(filters={"dangling": False}))


def _references(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "image/vfs/repositories.json").read_bytes())
    return doc


def test_tag_writes_what_the_engine_writes(pair: Pair) -> None:
    for name, repository, tag in (("web:1.0", "newrepo", "x"), ("bb:1.35", "web", "1.0"),
                                  ("api:nocache", "registry.example.com/a/b", None)):
        theirs = pair.client.images.get(name).tag(repository, tag)
        ours = pair.store.images.get(name).tag(repository, tag)
        assert ours is theirs is True
        assert _references(pair.ours_root) == _references(pair.theirs_root), name
        assert pair.store.images.get(f"{repository}:{tag or 'latest'}").id == \
            pair.client.images.get(f"{repository}:{tag or 'latest'}").id
    with pytest.raises(imagestore.ImageNotFound):
        pair.store.images.get("newrepo:nope")


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_save_named_is_the_engines_archive(pair: Pair) -> None:
    for name in ("web:1.0", "bk:1", "tool:1.0"):
        theirs = b"".join(pair.client.images.get(name).save(named=True))
        ours = b"".join(pair.store.images.get(name).save(named=True, format="legacy"))
        assert _members(ours) == _members(theirs), name
        unnamed = _members(b"".join(pair.store.images.get(name).save(format="legacy")))
        assert json.loads(unnamed["manifest.json"])[0]["RepoTags"] is None
