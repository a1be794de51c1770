"""Names a package loads on first use (PEP 562): the command line's ``--help`` and a warm
read must not pay for SQLAlchemy, the sync or the engine they re-export."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def loader(package: str, table: dict[str, str], namespace: dict[str, Any]
           ) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` for ``name`` and keeps it."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__


__all__ = ["loader"]
