"""A real Docker engine is the judge: it must see exactly the store imagestore left, and
imagestore must see exactly what the engine did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli
from engine import Engine, unpack_root_a
from snapshot import references, size

import imagestore


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return unpack_root_a(tmp_path / "lab")


@pytest.fixture
def engine(data_root: Path) -> Iterator[Engine]:
    e = Engine(data_root)
    yield e
    e.stop()


def _rows(docker_rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
    return {(r["ID"], r["Repository"], r["Tag"]) for r in docker_rows}


def _our_rows(capsys: pytest.CaptureFixture[str], root: Path, index: Path,
              *flags: str) -> set[tuple[str, str, str]]:
    rows = run_cli(capsys, root, "ls", *flags, "--json", index=index).json()
    return {(r["id"], r["repository"] or "<none>", r["tag"] or "<none>") for r in rows}


def test_engine_sees_what_imagestore_wrote(capsys: pytest.CaptureFixture[str], data_root: Path,
                                           engine: Engine, index: Path) -> None:
    root = data_root / "image" / "vfs"
    with imagestore.open(root, index) as store:
        web = store.resolve("web:1.0")
        devbase = store.resolve("devbase:1.0")
        web_alt = store.resolve("web-alt:1.0")
        dangling = next(i for i, _ in store.heads().items() if not references(store, i))
        config = json.loads(store.get(web).raw)
        config["comment"] = "created by imagestore"
        config.setdefault("config", {}).setdefault("Labels", {})["made.by"] = "imagestore"
        new_id = store.create(json.dumps(config, separators=(",", ":")).encode())
        store.set_parent(new_id, web)
        store.set_parent(web_alt, devbase)
        store.delete(dangling)
        expected_size = size(store, web)
    assert run_cli(capsys, root, "rm", "web:prod", index=index).code == 0
    ours_all = _our_rows(capsys, root, index, "-a")
    ours = _our_rows(capsys, root, index)

    engine.start()
    assert _rows(engine.images("-a")) == ours_all
    assert _rows(engine.images()) == ours
    created = engine.inspect(new_id)
    assert created["Parent"] == web
    assert created["Size"] == expected_size
    assert created["Comment"] == "created by imagestore"
    assert engine.inspect(web_alt)["Parent"] == devbase
    assert engine.docker("image", "inspect", dangling, check=False).returncode != 0
    assert engine.docker("image", "inspect", "web:prod", check=False).returncode != 0
    # The engine can still use what imagestore made: tag it and remove it again.
    engine.docker("tag", new_id, "made-by:imagestore")
    engine.docker("rmi", "made-by:imagestore")
    assert "invalid image" not in engine.log_text()


def test_imagestore_sees_what_the_engine_did(capsys: pytest.CaptureFixture[str],
                                             data_root: Path, engine: Engine,
                                             index: Path) -> None:
    root = data_root / "image" / "vfs"
    imagestore.open(root, index).close()  # an index from before the engine ran
    engine.start()
    engine.docker("tag", "web:1.0", "retagged:v2")
    engine.docker("rmi", "api:nocache")
    engine.docker("rmi", "-f", "tool:1.0")  # a stopped container uses it: its layers stay
    expected_all = _rows(engine.images("-a"))
    expected = _rows(engine.images())
    inspected = {i: engine.inspect(i) for i, _, _ in expected_all}
    engine.stop()

    result = run_cli(capsys, root, "sync", "--json", index=index)
    assert result.code == 0
    assert result.json()["removed"] > 0 and result.json()["problems"] == []
    assert _our_rows(capsys, root, index, "-a") == expected_all
    assert _our_rows(capsys, root, index) == expected
    with imagestore.open(root, index) as store:
        for image_id, truth in inspected.items():
            assert (store.get_parent(image_id) or "") == truth["Parent"]
            assert size(store, image_id) == truth["Size"]
            assert references(store, image_id) == sorted(truth["RepoTags"])


def test_a_plain_sync_sees_every_change_the_engine_makes(
        capsys: pytest.CaptureFixture[str], data_root: Path, engine: Engine, index: Path,
        tmp_path: Path) -> None:
    """With content signed by its folder and metadata by each image's folder, a plain sync
    (no --full) still sees tag, untag, rmi, build, commit, load and prune: dockerd makes
    every change by renaming files into place or removing them."""
    root = data_root / "image" / "vfs"
    imagestore.open(root, index).close()  # an index from before the engine ran
    engine.start()
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM web:1.0\nLABEL made.by=test\nENV A=b\n")
    (context / "note.txt").write_text("a file for a layer of its own\n")
    (context / "Dockerfile2").write_text("FROM web:1.0\nCOPY note.txt /note.txt\n")
    steps = [
        ("tag", ["tag", "web:1.0", "retagged:v2"]),
        ("untag", ["rmi", "web-alt:1.0"]),
        ("rmi", ["rmi", "api:nocache"]),
        ("build", ["build", "-q", "-t", "built:1", str(context)]),
        ("build a layer", ["build", "-q", "-f", str(context / "Dockerfile2"), "-t", "built:2",
                           str(context)]),
        ("commit", ["create", "--name", "c1", "devbase:1.0"]),
        ("commit", ["commit", "c1", "committed:2"]),
        ("load", ["save", "-o", str(tmp_path / "bb.tar"), "bb:1.35"]),
        ("load", ["rmi", "-f", "bb:1.35"]),
        ("load", ["load", "-q", "-i", str(tmp_path / "bb.tar")]),
        ("prune", ["image", "prune", "-f"]),
    ]
    for what, args in steps:
        done = engine.docker(*args, check=False)
        assert done.returncode == 0, (what, done.stderr)
        expected_all = _rows(engine.images("-a"))
        inspected = {i: engine.inspect(i) for i, _, _ in expected_all}
        engine.stop()  # the store is the engine's while it runs
        result = run_cli(capsys, root, "sync", "--json", index=index)
        assert result.code == 0 and result.json()["problems"] == [], (what, result.out)
        assert _our_rows(capsys, root, index, "-a") == expected_all, what
        with imagestore.open(root, index, readonly=True) as store:
            for image_id, truth in inspected.items():
                assert (store.get_parent(image_id) or "") == truth["Parent"], what
        engine.start()
