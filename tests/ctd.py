"""The containerd fixtures, unpacked for a test: root A (containerd 1.6 through ctr:
namespaces moby, k8s.io, default) and root C (a real Docker 29.7.2 on containerd 2.3.3, with
the engine's answers in truth-C.json). See tests/data/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from containerd_daemon import EXPECTED_A, ROOT_A, ROOT_C, unpack

TRUTH_C = ROOT_C.parent / "truth-C.json"


def unpack_a(dest: Path) -> Path:
    """Root A's containerd root."""
    return unpack(ROOT_A, dest, "containerd")


def unpack_c(dest: Path) -> tuple[Path, Path]:
    """Root C: (containerd root, Docker's data-root)."""
    root = unpack(ROOT_C, dest, "ctd-root")
    return root, dest / "docker-root"


def truth_c() -> Any:
    return json.loads(TRUTH_C.read_text())


def expected_a() -> Any:
    return json.loads(EXPECTED_A.read_text())
