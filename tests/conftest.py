"""Shared fixtures: the real Docker 20.10 store, empty roots, and layer helpers; and, through
``processes``, a run whose commands hear Ctrl-C and whose tests leave no process behind."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import imagestore
from imagestore.moby.digest import chain_ids

pytest_plugins = ["processes"]

DATA = Path(__file__).parent / "data" / "docker-20.10-vfs"
FIXTURE_ROOT = DATA / "image" / "vfs"
TRUTH = DATA / "truth"


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Default indexes go under a temp state dir, never the developer's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("IMAGESTORE_ROOT", raising=False)
    monkeypatch.delenv("IMAGESTORE_INDEX", raising=False)
    for name in ("IMAGESTORE_NAMESPACE", "IMAGESTORE_PLATFORM", "IMAGESTORE_DOCKER_ROOT"):
        monkeypatch.delenv(name, raising=False)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    for folder, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = Path(folder) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    return dst


@pytest.fixture
def real_root(tmp_path: Path) -> Path:
    """A writable copy of the real store written by Docker 20.10."""
    return copy_tree(FIXTURE_ROOT, tmp_path / "root")


@pytest.fixture
def empty_root(tmp_path: Path) -> Path:
    root = tmp_path / "empty"
    (root / "imagedb" / "content" / "sha256").mkdir(parents=True)
    (root / "imagedb" / "metadata" / "sha256").mkdir(parents=True)
    (root / "layerdb" / "sha256").mkdir(parents=True)
    (root / "layerdb" / "mounts").mkdir(parents=True)
    return root


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "index" / "index.sqlite"


@pytest.fixture
def open_store(index: Path) -> Iterator[Callable[..., imagestore.Store]]:
    """Open stores on a root with the test's index; all are closed at the end."""
    opened: list[imagestore.Store] = []

    def _open(root: Path, **kw: Any) -> imagestore.Store:
        kw.setdefault("index", index)
        store = imagestore.open(root, **kw)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def make_layers(root: Path, diff_ids: list[str], sizes: list[int] | None = None) -> list[str]:
    """Write layerdb entries for the chain of ``diff_ids`` (as dockerd would); their chain IDs."""
    chains = chain_ids(diff_ids)
    sizes = sizes or [len(d) for d in diff_ids]
    for i, (chain, diff) in enumerate(zip(chains, diff_ids, strict=True)):
        folder = root / "layerdb" / "sha256" / chain.split(":", 1)[1]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "diff").write_text(diff)
        (folder / "size").write_text(str(sizes[i]))
        (folder / "cache-id").write_text("c" * 64)
        if i:
            (folder / "parent").write_text(chains[i - 1])
    return chains


def config(comment: str = "", diff_ids: list[str] | None = None, **extra: Any) -> bytes:
    rootfs: dict[str, Any] = {"type": "layers"}
    if diff_ids is not None:
        rootfs["diff_ids"] = diff_ids
    doc = {"comment": comment, "rootfs": rootfs, **extra}
    return json.dumps(doc).encode()


def truth_json(name: str) -> Any:
    return json.loads((TRUTH / name).read_text())


def truth_jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (TRUTH / name).read_text().splitlines() if line.strip()]
