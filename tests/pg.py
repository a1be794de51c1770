"""A throwaway PostgreSQL server for the tests that need one (started here, never assumed)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def postgres_server() -> Iterator[str]:
    """Start a private cluster on a Unix socket; yields its base URL, or skips saying why."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install '.[test]')")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    prefix: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="is-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(home, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = home / "data", home / "server.log"
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "imagestore",
                        "-E", "UTF8", "--no-locale"], check=True, capture_output=True)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60",
                        "-o", f"-k {home} -c listen_addresses='' -p 54329", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(home, ignore_errors=True)
        reason = exc.stderr.decode(errors="replace")[-300:]
        pytest.skip(f"PostgreSQL could not start here: {reason}")
    try:
        yield f"postgresql+psycopg://imagestore@/{{db}}?host={home}&port=54329"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def create_database(base_url: str, name: str) -> str:
    import psycopg

    admin = base_url.format(db="postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base_url.format(db=name)
