"""Reference names as docker parses, normalises and stores them (``repositories.json``).

The tables are docker's own test cases, from github.com/distribution/reference v0.6.0
(normalize_test.go: TestValidateReferenceName, TestValidateRemoteName, TestParseRepositoryInfo,
TestParseReferenceWithTagAndDigest, TestParseDockerRef, TestParseAnyReference;
reference_test.go: TestReferenceParse), the package moby and docker/cli vendor. Expected keys are
what docker's reference store (moby reference/store.go ``Get``) looks up: the familiar string of
``ParseDockerRef`` of the input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

from imagestore.moby.references import (
    InvalidReference,
    normalize_reference,
    parse_normalized_named,
    parse_repositories,
)

D = "sha256:" + "f" * 64
REDIS_D = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
BUSYBOX_D = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
IMAGE = "sha256:" + "a" * 64

NORMALIZED = [
    # from the brief's finding
    ("bb", "bb:latest"),
    ("library/bb:1.35", "bb:1.35"),
    ("docker.io/library/bb:1.35", "bb:1.35"),
    ("index.docker.io/library/bb:1.35", "bb:1.35"),
    ("docker.io/bb:1.35", "bb:1.35"),
    ("docker.io/foo/bar", "foo/bar:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("registry.example.com/team/api:1.0", "registry.example.com/team/api:1.0"),
    # normalize_test.go TestParseRepositoryInfo (familiar, full and ambiguous names)
    ("localhost/fooo", "localhost/fooo:latest"),
    ("localhost/fooo/bar", "localhost/fooo/bar:latest"),
    ("LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo:latest"),
    ("LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar:latest"),
    ("fooo/bar", "fooo/bar:latest"),
    ("docker.io/fooo/bar", "fooo/bar:latest"),
    ("index.docker.io/fooo/bar", "fooo/bar:latest"),
    ("ubuntu", "ubuntu:latest"),
    ("docker.io/library/ubuntu", "ubuntu:latest"),
    ("library/ubuntu", "ubuntu:latest"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu:latest"),
    ("docker.io/nonlibrary/ubuntu", "nonlibrary/ubuntu:latest"),
    ("other/library", "other/library:latest"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase:latest"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase:latest"),
    ("example.com/private/moonbase", "example.com/private/moonbase:latest"),
    ("example.com:8000/privatebasee", "example.com:8000/privatebasee:latest"),
    ("index.docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base:latest"),
    ("docker.io/foo", "foo:latest"),
    ("library/foo/bar", "library/foo/bar:latest"),
    ("docker.io/library/foo/bar", "library/foo/bar:latest"),
    ("docker.io/store/foo/bar", "store/foo/bar:latest"),
    ("Foo/bar", "Foo/bar:latest"),
    ("FOO/bar", "FOO/bar:latest"),
    # TestValidateReferenceName (valid names)
    ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker:latest"),
    ("192.168.0.1", "192.168.0.1:latest"),
    ("192.168.0.1:80", "192.168.0.1:80"),
    ("docker.io/" + HEX64, HEX64 + ":latest"),
    ("dock__er/docker", "dock__er/docker:latest"),
    ("docker---rules/docker", "docker---rules/docker:latest"),
    # TestParseDockerRef
    ("busybox:latest", "busybox:latest"),
    ("busybox@" + BUSYBOX_D, "busybox@" + BUSYBOX_D),
    ("library/busybox:latest", "busybox:latest"),
    ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
    ("gcr.io/library/busybox:latest@" + BUSYBOX_D, "gcr.io/library/busybox@" + BUSYBOX_D),
    # TestParseReferenceWithTagAndDigest: a tag and a digest → the digest (ParseDockerRef)
    ("busybox:latest@" + REDIS_D, "busybox@" + REDIS_D),
    # TestParseAnyReference
    ("docker.io/library/redis@" + REDIS_D, "redis@" + REDIS_D),
    ("dmcgowan/myapp@" + REDIS_D, "dmcgowan/myapp@" + REDIS_D),
    ("docker.io/mcgowan/myapp:latest", "mcgowan/myapp:latest"),
    ("dbcc1", "dbcc1:latest"),
    (REDIS_D[7:-1], REDIS_D[7:-1] + ":latest"),  # 63 hex digits: a name
    # reference_test.go TestReferenceParse (valid ones)
    ("test:5000/repo:tag", "test:5000/repo:tag"),
    ("test:5000/repo@" + D, "test:5000/repo@" + D),
    ("test:5000/repo:tag@" + D, "test:5000/repo@" + D),
    ("lowercase:Uppercase", "lowercase:Uppercase"),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
    ("b.gcr.io/test.example.com/my-app:test.example.com",
     "b.gcr.io/test.example.com/my-app:test.example.com"),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"),
    ("xn--7o8h.com/myimage@sha512:" + "f" * 128, "xn--7o8h.com/myimage@sha512:" + "f" * 128),
    ("foo_bar.com:8080", "foo_bar.com:8080"),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050"),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo:tag"),
    ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
    ("example.com/" + "a" * 255 + ":tag", "example.com/" + "a" * 255 + ":tag"),
]

INVALID = [
    # the brief: upper case, bare hex ID, empty components, bad tags, over-long names
    "FOO", "Bb:1.35", "library/BB:1.35", "docker.io/library/Bb", HEX64, "a//b", "bb:", "bb:-x",
    "bb:" + "x" * 129, "x" * 248,
    # normalize_test.go TestValidateReferenceName (invalid)
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    # TestValidateRemoteName (invalid)
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker",
    "dock_.er/docker", "dock-.er/docker", "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 3
    + "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
    # reference_test.go TestReferenceParse (errors)
    "", ":justtag", "@" + D, "repo@sha256:" + "f" * 34, "validname@invaliddigest:" + "f" * 64,
    "Uppercase:tag", "test:5000/Uppercase/lowercase:tag", "domain/" + "a" * 256 + ":tag",
    "aa/asdf$$^/aa", "[2001:db8::1]", "[2001:db8::1]:5000", "[2001:db8::1]:tag",
    "[fe80::1%@invalidzone]:5000/repo",
    # digests go-digest refuses: upper-case hex, wrong length
    "bb@sha256:" + "F" * 64, "bb@sha256:" + "f" * 63,
    # ASCII only, as Go's \w
    "bb:t\u00e9g", "b\u00e9b",
]


@pytest.mark.parametrize(("text", "key"), NORMALIZED)
def test_normalize_reference_matches_docker(text: str, key: str) -> None:
    assert normalize_reference(text) == key
    assert normalize_reference(key) == key  # a key is its own normal form


@pytest.mark.parametrize("text", INVALID)
def test_invalid_names_are_refused_and_left_unchanged(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_normalized_named(text)
    assert normalize_reference(text) == text


def test_docker_error_messages() -> None:
    with pytest.raises(InvalidReference, match="cannot specify 64-byte hexadecimal strings"):
        parse_normalized_named(HEX64)
    with pytest.raises(InvalidReference,
                       match=r"repository name \(library/FOO\) must be lowercase"):
        parse_normalized_named("FOO")
    with pytest.raises(InvalidReference, match="must not be more than 255 characters"):
        parse_normalized_named("x" * 248)
    with pytest.raises(InvalidReference, match="unsupported digest algorithm"):
        parse_normalized_named("validname@invaliddigest:" + "f" * 64)


def test_parse_keeps_tag_and_digest_apart() -> None:
    named = parse_normalized_named("busybox:latest@" + REDIS_D)
    assert (named.domain, named.path, named.tag, named.digest) == (
        "docker.io", "library/busybox", "latest", REDIS_D)
    assert named.familiar_string() == "busybox:latest@" + REDIS_D  # FamiliarString


def test_hostile_input_is_fast() -> None:
    for text in ("a" * 100_000 + "!", "a." * 50_000 + "!", "a-" * 50_000 + "/",
                 "a/" * 30_000 + "A", "a" + "-" * 100_000 + "!"):
        assert normalize_reference(text) == text


def _raw(repos: dict[str, dict[str, object]]) -> bytes:
    return json.dumps({"Repositories": repos}).encode()


def test_parse_repositories_skips_invalid_entries() -> None:
    raw = _raw({
        "bb": {"bb:1.35": IMAGE, "bb@" + D: IMAGE, "bb:-bad": IMAGE,
               "bb:1@" + D: IMAGE, "bb": IMAGE, "other:1": IMAGE, "bb:2": "nope"},
        "registry.example.com/team/api": {"registry.example.com/team/api:1.0": IMAGE},
        "localhost:5000/x": {"localhost:5000/x:latest": IMAGE},
        "FOO": {"FOO:latest": IMAGE},
        HEX64: {HEX64 + ":latest": IMAGE},
        "a//b": {"a//b:1": IMAGE},
        "docker.io/library/web": {"docker.io/library/web:1": IMAGE},
        "web:1": {"web:1": IMAGE},
        "sha256": {"sha256:" + "b" * 64: IMAGE},
        "web": {"docker.io/library/web:2": IMAGE, "library/web:3": IMAGE, "web:4": IMAGE},
    })
    refs, problems = parse_repositories(raw)
    assert sorted((r.ref, r.repository, r.tag, r.digest) for r in refs if not r.misfiled) == [
        ("bb:1.35", "bb", "1.35", None),
        ("bb@" + D, "bb", None, D),
        ("localhost:5000/x:latest", "localhost:5000/x", "latest", None),
        ("registry.example.com/team/api:1.0", "registry.example.com/team/api", "1.0", None),
        ("web:4", "web", "4", None),
    ]
    # What moby's reference store lists although it finds it by no name (reference/store.go
    # reload keeps every key ParseNormalizedNamed takes): as docker images shows it.
    assert sorted((r.ref, r.repository, r.tag) for r in refs if r.misfiled) == [
        (HEX64 + ":latest", HEX64, "latest"), ("other:1", "other", "1"),
        ("sha256:" + "b" * 64, "sha256", "b" * 64), ("web:1", "web", "1"), ("web:2", "web", "2"),
        ("web:3", "web", "3")]
    assert all(r.image_id == IMAGE for r in refs)
    by_ref = {p.split("'")[1]: p for p in problems}
    assert len(by_ref) == len(problems) == 13
    assert {k for k, p in by_ref.items() if p.startswith("repository '")} == {
        "FOO", HEX64, "a//b", "docker.io/library/web", "web:1", "sha256"}
    assert {k for k, p in by_ref.items() if p.startswith("reference '")} == {
        "bb:-bad", "bb:1@" + D, "bb", "other:1", "bb:2", "docker.io/library/web:2",
        "library/web:3"}
    assert "must be lowercase" in by_ref["FOO"]
    assert "64-byte hexadecimal" in by_ref[HEX64]
    assert "familiar form" in by_ref["docker.io/library/web"]
    assert "'web:3'" in by_ref["library/web:3"]
    assert "filed under repository 'bb'" in by_ref["other:1"]
    assert "both a tag and a digest" in by_ref["bb:1@" + D]
    assert "neither a tag nor a digest" in by_ref["bb"]
    assert "invalid reference format" in by_ref["bb:-bad"]
    assert by_ref["bb:2"] == "reference 'bb:2': not an image ID: 'nope'"
    assert all(p.startswith(("reference '", "repository '")) for p in problems)


def test_real_repositories_json_is_all_valid() -> None:
    raw = (Path(__file__).parent / "data/docker-20.10-vfs/image/vfs/repositories.json")
    refs, problems = parse_repositories(raw.read_bytes())
    assert problems == []
    assert len(refs) == 12
    for r in refs:
        assert normalize_reference(r.ref) == r.ref


def test_cli_inspect_full_name_resolves_like_familiar(capsys: pytest.CaptureFixture[str],
                                                      real_root: Path) -> None:
    familiar = run_cli(capsys, real_root, "inspect", "--json", "bb:1.35")
    assert familiar.code == 0, familiar.err
    image_id = familiar.json()[0]["id"]
    for name in ("docker.io/library/bb:1.35", "library/bb:1.35", "index.docker.io/bb:1.35",
                 "docker.io/bb:1.35"):
        full = run_cli(capsys, real_root, "inspect", "--json", name)
        assert full.code == 0, (name, full.err)
        assert full.json()[0]["id"] == image_id
    assert run_cli(capsys, real_root, "inspect", "BB:1.35").code != 0


def test_cli_sync_reports_bad_reference(capsys: pytest.CaptureFixture[str],
                                        real_root: Path) -> None:
    path = real_root / "repositories.json"
    doc = json.loads(path.read_text())
    image_id = doc["Repositories"]["bb"]["bb:1.35"]
    doc["Repositories"]["BadName"] = {"BadName:1": image_id}
    doc["Repositories"]["bb"]["docker.io/library/bb:9"] = image_id
    path.write_text(json.dumps(doc))
    result = run_cli(capsys, real_root, "sync", "--json")
    assert result.code == 0, result.err
    bad = [p for p in result.json()["problems"] if p["kind"] == "bad-reference"]
    reasons = " ".join(p["reason"] for p in bad)
    assert len(bad) == 2, bad
    assert "'BadName'" in reasons and "must be lowercase" in reasons
    assert "'docker.io/library/bb:9'" in reasons
    assert run_cli(capsys, real_root, "inspect", "bb:1.35").code == 0
    assert run_cli(capsys, real_root, "inspect", "bb:9").code != 0


def _misfile(repositories: Path, image_id: str) -> None:
    """File a tag under another repository's key, as no docker writes it but docker lists."""
    doc = json.loads(repositories.read_text())
    doc["Repositories"]["wrongrepo"] = {"other:1": image_id}
    repositories.write_text(json.dumps(doc))


def test_ls_lists_a_tag_filed_under_another_repository(capsys: pytest.CaptureFixture[str],
                                                      real_root: Path) -> None:
    """Issue 23, item 5: ``"wrongrepo": {"other:1": ID}`` is ``other 1`` in ``docker images``
    (moby's reference store lists every key that parses); ``ls`` left it out. It is listed
    now, the problem is still recorded, and the name still finds nothing, as in docker."""
    dangling = run_cli(capsys, real_root, "ls", "--dangling", "-q", "--no-trunc").out.split()
    assert len(dangling) == 1
    _misfile(real_root / "repositories.json", dangling[0])
    rows = run_cli(capsys, real_root, "ls", "--json").json()
    assert ("other", "1") in {(r["repository"], r["tag"]) for r in rows if r["id"] == dangling[0]}
    assert run_cli(capsys, real_root, "ls", "--dangling", "-q").out == ""  # tagged now
    problems = run_cli(capsys, real_root, "sql", "SELECT kind, reason FROM sync_problems",
                       "--json").json()
    assert [p["kind"] for p in problems] == ["bad-reference"]
    assert "filed under repository 'wrongrepo'" in problems[0]["reason"]
    inspected = run_cli(capsys, real_root, "inspect", dangling[0]).json()[0]
    assert inspected["repo_tags"] == ["other:1"]
    by_name = run_cli(capsys, real_root, "inspect", "other:1")
    assert by_name.code == 1 and "No such image" in by_name.err


def test_docker_lists_the_misfiled_tag_as_ls_does(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    """The judge: Docker on a copy of root-A with the misfiled entry."""
    from engine import Engine, unpack_root_a

    data_root = unpack_root_a(tmp_path / "lab")
    root = data_root / "image" / "vfs"
    index = tmp_path / "index.sqlite"
    dangling = run_cli(capsys, root, "ls", "--dangling", "-q", "--no-trunc",
                       index=index).out.split()
    _misfile(root / "repositories.json", dangling[0])

    def ours(*flags: str) -> set[tuple[str, str, str]]:
        listed = run_cli(capsys, root, "ls", *flags, "--json", index=index).json()
        return {(r["id"], r["repository"] or "<none>", r["tag"] or "<none>") for r in listed}

    expected = {flags: ours(*flags) for flags in ((), ("-a",))}
    saved = run_cli(capsys, data_root, "save", "other", "-o", str(tmp_path / "other.tar"),
                    index=index)  # a bare name: the repository "other" holds nothing
    assert saved.code == 1 and not (tmp_path / "other.tar").exists()
    engine = Engine(data_root).start()
    try:
        for flags, rows in expected.items():
            theirs = {(r["ID"], r["Repository"], r["Tag"]) for r in engine.images(*flags)}
            assert theirs == rows, flags
        assert (dangling[0], "other", "1") in expected[()]
        assert engine.inspect(dangling[0])["RepoTags"] == ["other:1"]
        assert engine.docker("image", "inspect", "other:1", check=False).returncode != 0
        assert engine.docker("save", "-o", str(tmp_path / "theirs.tar"), "other",
                             check=False).returncode != 0
    finally:
        engine.stop()
