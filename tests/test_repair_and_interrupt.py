"""Hostile findings of round 3: a repair never removes a config that something still names
(issue item 1), and an interrupted prune (Ctrl-C, SIGTERM) says what it did (item 4)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from cli_helpers import run_cli
from engine import unpack_root_a

import imagestore
from imagestore.service import prune as pruning


def test_repair_keeps_configs_children_name_when_a_layer_is_damaged(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path) -> None:
    root = unpack_root_a(tmp_path) / "image" / "vfs"
    layer = next(p for p in (root / "layerdb/sha256").iterdir() if p.name.startswith("edcef473"))
    original = (layer / "diff").read_bytes()
    (layer / "diff").write_bytes(b"garbage")
    content = root / "imagedb/content/sha256"
    before = sorted(p.name for p in content.iterdir())
    found = run_cli(capsys, root, "fsck", "--repair", "--json", index=index)
    assert found.code == 1, found.err
    assert sorted(p.name for p in content.iterdir()) == before  # nothing removed
    missing = [f for f in found.json()["findings"] if f["check"] == "missing-layer"]
    assert missing and all("never removed by --repair" in f["action"] for f in missing)
    (layer / "diff").write_bytes(original)  # mended: every image is whole again
    with imagestore.open(root, index) as store:
        assert store.sync(full=True).problems == []
        assert store.resolve("web:1.0") and store.get_parent(store.resolve("web:prod"))


def test_an_interrupted_prune_keeps_the_record_of_what_it_did(tmp_path: Path,
                                                              index: Path) -> None:
    root = unpack_root_a(tmp_path) / "image" / "vfs"
    seen: list[tuple[str, str]] = []

    def stop_after_three(record: tuple[str, str]) -> None:
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with imagestore.open(root, index) as store:
        with pytest.raises(pruning.PruneInterrupted) as stopped:
            pruning.prune(store, all_images=True, on_record=stop_after_three)
        result = stopped.value.result
        assert result.interrupted and result.records == seen
        doc = result.to_dict()
        assert doc["interrupted"] is True
        deleted = [v for k, v in seen if k == "deleted" and v in doc["deleted"]]
        for image_id in deleted:  # what it printed is done, on disk
            assert not (root / "imagedb/content/sha256" / image_id[7:]).exists()


def _terminate_after(monkeypatch: pytest.MonkeyPatch, records: int) -> None:
    """SIGTERM to this very process once ``records`` records were made, as a user's
    ``kill`` would land between two of them."""
    from imagestore.service.delete import Deleter

    made = Deleter._record

    def record(self: Deleter, into: list[tuple[str, str]], new: list[tuple[str, str]]) -> None:
        made(self, into, new)
        if len(self.done) >= records:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Deleter, "_record", record)


@pytest.mark.parametrize("fmt", [None, "--json"])
def test_prune_killed_with_sigterm_says_what_it_removed(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        index: Path, fmt: str | None) -> None:
    root = unpack_root_a(tmp_path) / "image" / "vfs"
    _terminate_after(monkeypatch, 3)
    result = run_cli(capsys, root, "prune", "-a", *([fmt] if fmt else []), index=index)
    assert result.code == 130 and result.err.strip() == "imagestore: interrupted"
    content = root / "imagedb/content/sha256"
    if fmt is None:
        lines = result.out.splitlines()
        assert lines[0] == "Deleted Images:" and lines[-1].endswith("(interrupted)")
        printed = [line.split(": ", 1) for line in lines[1:-2]]
        assert len(printed) >= 3
    else:
        doc = json.loads(result.out)
        assert doc["interrupted"] is True
        printed = [["deleted", i] for i in doc["deleted"]] + \
            [["untagged", r] for r in doc["untagged"]]
        assert doc["deleted"] or doc["untagged"]
    for kind, value in printed:  # every record it printed is done on disk
        if kind == "deleted":  # an image's config or a layer's folder: gone
            assert not (content / value[7:]).exists()
            assert not (root / "layerdb/sha256" / value[7:]).exists()
