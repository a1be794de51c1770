"""The other commands, on the real store, checked against the engine's own answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import truth_json

from imagestore.index import engine as db
from imagestore.moby.digest import chain_id


def test_inspect_matches_docker_image_inspect(capsys: pytest.CaptureFixture[str],
                                              real_root: Path) -> None:
    truth = truth_json("image-inspect.json")
    result = run_cli(capsys, real_root, "inspect", "--json", *[t["Id"] for t in truth])
    assert result.code == 0, result.err
    ours = {d["id"]: d for d in result.json()}
    for t in truth:
        d = ours[t["Id"]]
        assert (d["parent"] or "") == t["Parent"]
        assert d["size"] == t["Size"]
        assert d["os"] == t["Os"] and d["architecture"] == t["Architecture"]
        assert d["created"] == t["Created"]
        assert d["rootfs"]["diff_ids"] == t["RootFS"].get("Layers", [])
        assert d["chain_id"] == chain_id(t["RootFS"].get("Layers", []))
        assert sorted(d["repo_tags"]) == sorted(t["RepoTags"])
        last = t["Metadata"]["LastTagTime"]
        assert (d["last_updated"] or "0001-01-01T00:00:00Z") == last
        for child in d["children"]:
            assert ours[child]["parent"] == d["id"]


def test_inspect_resolves_names_and_prefixes(capsys: pytest.CaptureFixture[str],
                                             real_root: Path) -> None:
    by_name = run_cli(capsys, real_root, "inspect", "devbase").json()  # devbase:latest
    by_tag = run_cli(capsys, real_root, "inspect", "devbase:1.0").json()
    full = by_name[0]["id"]
    by_prefix = run_cli(capsys, real_root, "inspect", full.split(":")[1][:8]).json()
    assert by_name[0]["id"] == by_tag[0]["id"] == by_prefix[0]["id"] == full
    registry = run_cli(capsys, real_root, "inspect", "registry.example.com/team/api:1.0").json()
    assert registry[0]["id"] == run_cli(capsys, real_root, "inspect", "api:1.0").json()[0]["id"]


def test_search_parent_children_heads(capsys: pytest.CaptureFixture[str],
                                      real_root: Path) -> None:
    truth = {t["Id"]: t for t in truth_json("image-inspect.json")}
    for image_id, t in truth.items():
        assert run_cli(capsys, real_root, "search", image_id[7:19]).out.strip() == image_id
        parent = run_cli(capsys, real_root, "parent", image_id).out.strip()
        assert parent == t["Parent"]
        kids = run_cli(capsys, real_root, "children", image_id, "--json").json()
        assert kids == sorted(i for i, o in truth.items() if o["Parent"] == image_id)
    heads = run_cli(capsys, real_root, "heads", "--json").json()
    parents = {t["Parent"] for t in truth.values()}
    assert heads == sorted(i for i in truth if i not in parents)


def test_tree_draws_every_image_once_with_tags(capsys: pytest.CaptureFixture[str],
                                               real_root: Path) -> None:
    lines = run_cli(capsys, real_root, "tree").out.splitlines()
    ids = [line.strip("│├└─ ").split()[0] for line in lines if line.strip()]
    assert len(ids) == len(set(ids)) == 39
    assert any("web:prod" in line for line in lines)
    nested = run_cli(capsys, real_root, "tree", "--json").json()

    def count(nodes: list[dict[str, Any]]) -> int:
        return sum(1 + count(n["children"]) for n in nodes)

    assert count(nested) == 39


def test_tree_keeps_deep_chains_narrow(capsys: pytest.CaptureFixture[str],
                                       empty_root: Path) -> None:
    ids = []
    for i in range(30):
        cfg = json.dumps({"comment": f"step {i}", "rootfs": {"type": "layers"}}).encode()
        path = empty_root.parent / f"c{i}.json"
        path.write_bytes(cfg)
        ids.append(run_cli(capsys, empty_root, "create", str(path)).out.strip())
        if i:
            assert run_cli(capsys, empty_root, "set-parent", ids[i], ids[i - 1]).code == 0
    lines = run_cli(capsys, empty_root, "tree").out.splitlines()
    assert len(lines) == 30
    assert max(len(line) for line in lines) < 40  # a 30-deep chain does not march right


def test_create_rm_set_parent_round_trip(capsys: pytest.CaptureFixture[str],
                                         real_root: Path, tmp_path: Path) -> None:
    web = run_cli(capsys, real_root, "inspect", "web:1.0").json()[0]
    cfg = json.loads(next((real_root / "imagedb/content/sha256").glob(web["id"][7:])).read_bytes())
    cfg["comment"] = "made by imagestore"
    path = tmp_path / "new.json"
    path.write_bytes(json.dumps(cfg).encode())
    new_id = run_cli(capsys, real_root, "create", str(path)).out.strip()
    assert new_id.startswith("sha256:")
    assert run_cli(capsys, real_root, "set-parent", new_id, "web:1.0").code == 0
    assert run_cli(capsys, real_root, "parent", new_id).out.strip() == web["id"]
    assert (real_root / "imagedb/metadata/sha256" / new_id[7:] / "parent").read_bytes() == \
        web["id"].encode()
    removed = run_cli(capsys, real_root, "rm", new_id)
    assert removed.code == 0
    assert removed.out.splitlines() == [f"Deleted: {new_id}"]  # layers still used by web:1.0
    assert run_cli(capsys, real_root, "inspect", new_id).code == 1


def test_rm_of_a_tagged_head_untags_and_releases(capsys: pytest.CaptureFixture[str],
                                                 real_root: Path) -> None:
    result = run_cli(capsys, real_root, "rm", "web:prod")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "Untagged: web:prod"
    repos = json.loads((real_root / "repositories.json").read_text())
    assert "web:prod" not in repos["Repositories"]["web"]
    assert "web:1.0" in repos["Repositories"]["web"]
    assert run_cli(capsys, real_root, "inspect", "web:prod").code == 1


def test_create_from_stdin(real_root: Path, tmp_path: Path) -> None:
    cfg = b'{"comment": "stdin", "rootfs": {"type": "layers"}}'
    proc = subprocess.run(
        [sys.executable, "-m", "imagestore.cli", "--root", str(real_root),
         "--index", str(tmp_path / "i.sqlite"), "create", "-"],
        input=cfg, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == "sha256:" + __import__("hashlib").sha256(cfg).hexdigest()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["inspect", "nope:1"], "No such image"),
        (["search", "zz"], "No such image"),
        (["search", "%"], "No such image"),
        (["search", "sha256:"], "No such image"),
        (["parent", "../../etc/passwd"], "No such image"),
        (["inspect", "a" * 10000], "No such image"),
        (["set-parent", "web:1.0", "web:prod"], "cycle"),
        (["rm", "sha256:" + "0" * 64], "No such image"),
    ],
)
def test_data_errors_are_one_line_exit_1(capsys: pytest.CaptureFixture[str], real_root: Path,
                                         args: list[str], needle: str) -> None:
    result = run_cli(capsys, real_root, *args)
    assert result.code == 1
    assert result.err.startswith("imagestore: ")
    assert len(result.err.strip().splitlines()) == 1
    assert needle in result.err
    assert "Traceback" not in result.err


def test_ambiguous_prefix_lists_candidates(capsys: pytest.CaptureFixture[str],
                                           real_root: Path) -> None:
    ids = [t["Id"][7:] for t in truth_json("image-inspect.json")]
    prefix = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    result = run_cli(capsys, real_root, "search", prefix)
    assert result.code == 1
    for image_id in ids:
        if image_id.startswith(prefix):
            assert image_id in result.err


def test_invalid_config_is_rejected(capsys: pytest.CaptureFixture[str], real_root: Path,
                                    tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{}")
    result = run_cli(capsys, real_root, "create", str(bad))
    assert result.code == 1
    assert "no RootFS key" in result.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    assert run_cli(capsys, real_root, "no-such-command").code == 2
    assert run_cli(capsys, real_root, "inspect").code == 2
    assert run_cli(capsys, None, "ls").code == 2


def test_readonly_refuses_writes(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    result = run_cli(capsys, real_root, "--readonly", "rm", "web:prod")
    assert result.code == 1
    assert "read" in result.err
    assert (real_root / "imagedb/content/sha256").exists()
    assert run_cli(capsys, real_root, "inspect", "web:prod").code == 0


def test_env_vars_and_default_index(capsys: pytest.CaptureFixture[str], real_root: Path,
                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGESTORE_ROOT", str(real_root))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result = run_cli(capsys, None, "sync", "--json")
    assert result.code == 0
    assert result.json()["unchanged"] + result.json()["added"] == 39
    files = list((tmp_path / "state" / "imagestore").glob("*.sqlite"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "imagestore").stat().st_mode & 0o777 == 0o700


def test_data_root_is_accepted(capsys: pytest.CaptureFixture[str], real_root: Path,
                               tmp_path: Path) -> None:
    data_root = tmp_path / "docker"
    (data_root / "image").mkdir(parents=True)
    real_root.rename(data_root / "image" / "vfs")
    assert len(run_cli(capsys, data_root, "ls", "--json").json()) == 13


def test_info_names_the_index(capsys: pytest.CaptureFixture[str], real_root: Path,
                              index: Path) -> None:
    data = run_cli(capsys, real_root, "info", "--json", index=index).json()
    assert data["index"] == str(index)
    assert (data["images"], data["layers"], data["tags"], data["problems"]) == (39, 13, 12, 0)
    assert data["revision"] == db.head_revision()
    assert run_cli(capsys, real_root, "info", index=index).out.startswith(f"root: {real_root}")


@pytest.mark.parametrize("args", [
    ["ls", "--json", "--csv"], ["ls", "--nl", "--json"], ["ls", "-q", "--json"],
    ["ls", "--csv", "-q"], ["sql", "SELECT 1", "--json", "--nl"],
    ["sql", "SELECT 1", "--csv", "--json"],
])
def test_conflicting_output_options_are_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                      real_root: Path, args: list[str]) -> None:
    result = run_cli(capsys, real_root, *args)
    assert result.code == 2
    assert result.out == ""
    assert "cannot be combined" in result.err


def test_create_refuses_a_huge_file_without_reading_it(real_root: Path, tmp_path: Path) -> None:
    """A 2 GiB file is refused after reading at most the limit: the process stays small."""
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(2 << 30)  # sparse: costs no disk
    probe = ("import resource, sys\n"
             "from imagestore.cli import main\n"
             "try:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    done = subprocess.run([sys.executable, "-c", probe, "--root", str(real_root), "create",
                           str(huge)], capture_output=True, text=True, timeout=120)
    code, peak_mb = map(int, done.stdout.split())
    assert code == 1
    assert "larger than" in done.stderr and len(done.stderr.splitlines()) == 1
    assert peak_mb < 300  # 2 GiB read whole would show


@pytest.mark.parametrize("args", [["--help"], ["ls", "--help"], ["nosuchcommand"],
                                  ["ls", "--bogus"]])
def test_help_and_usage_errors_load_no_database_layer(args: list[str]) -> None:
    """--help and usage errors answer at once: neither SQLAlchemy nor the sync is imported."""
    probe = ("import sys\nfrom imagestore.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('sqlalchemy', 'alembic') or m.startswith('imagestore.sync')"
             " or m.startswith('imagestore.index'))\n"
             "print(heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                          text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[]"
