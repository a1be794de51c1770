"""Secrets out of an image config, for an index that collects a whole fleet's configs.

A config carries ``Env`` values (``config.Env``, ``container_config.Env``) and, in its
history, the build arguments a ``RUN`` saw (``|2 TOKEN=abc USER=x /bin/sh -c …``, as both
the classic builder and BuildKit record them). Names stay, values go: a report can still say
which images set ``AWS_SECRET_ACCESS_KEY``, without holding it.
"""

from __future__ import annotations

import json
import re
from typing import Any

REDACTED = "<redacted>"
# "|N " then N "NAME=value" words (values with spaces are not quoted by the builders, so the
# words are taken as they come: a value cut short leaves its tail in the command, never its
# head).
_BUILD_ARGS = re.compile(r"^(?P<pre>(?:RUN )?\|(?P<n>\d+) )(?P<rest>.*)$", re.DOTALL)


def redact_env(values: Any) -> Any:
    if not isinstance(values, list):
        return values
    return [f"{v.split('=', 1)[0]}={REDACTED}" if isinstance(v, str) and "=" in v else v
            for v in values]


def redact_command(command: str) -> str:
    found = _BUILD_ARGS.match(command)
    if found is None:
        return command
    words = found["rest"].split(" ")
    count = min(int(found["n"]), len(words))
    for i in range(count):
        name, eq, _ = words[i].partition("=")
        if eq:
            words[i] = f"{name}={REDACTED}"
    return found["pre"] + " ".join(words)


def redact_config(raw: bytes) -> bytes:
    """The config with every Env value and build argument redacted; bytes that are not a
    JSON object are returned as they are (the index only holds configs that parsed)."""
    try:
        config = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(config, dict):
        return raw
    for key in ("config", "container_config"):
        section = config.get(key)
        if isinstance(section, dict) and "Env" in section:
            section["Env"] = redact_env(section["Env"])
            if isinstance(section.get("Cmd"), list):
                section["Cmd"] = [redact_command(c) if isinstance(c, str) else c
                                  for c in section["Cmd"]]
    history = config.get("history")
    if isinstance(history, list):
        for entry in history:
            if isinstance(entry, dict) and isinstance(entry.get("created_by"), str):
                entry["created_by"] = redact_command(entry["created_by"])
    return json.dumps(config, separators=(",", ":")).encode()


__all__ = ["REDACTED", "redact_command", "redact_config", "redact_env"]
