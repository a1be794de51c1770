"""``save``: images out of a store as a ``docker save`` archive, without a daemon.

The archive goes to a file (written aside and renamed into place only when every layer
checked out) or, with ``-o -``, to standard output for a pipe; a terminal is refused, as
docker refuses it. The library does the work (``Store.save``: ``imagestore.saving``, or a containerd
store's blobs), imported only when the
command runs: ``--help`` must not load the index.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from imagestore.cli.app import Context, cli, pass_ctx
from imagestore.errors import ImageStoreError

FORMATS = ("oci", "legacy")
TERMINAL = "cowardly refusing to save to a terminal. Use the -o flag or redirect"


@cli.command("save")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("-o", "--output", required=True, metavar="FILE|-",
              help="Write the archive to FILE, or to standard output with '-' (not a "
                   "terminal).")
@click.option("--format", "layout", type=click.Choice(FORMATS), default="oci",
              show_default=True,
              help="oci: the layout of Docker 25 and later; legacy: Docker 24 and earlier. "
                   "docker load of either version reads both.")
@pass_ctx
def save_cmd(ctx: Context, refs: tuple[str, ...], output: str, layout: str) -> None:
    """Save images (tags, IDs or ID prefixes, bare names for every tag) to an archive that
    docker load accepts; layers are rebuilt byte for byte from the disk."""
    stream = sys.stdout.buffer if output == "-" else None
    if stream is not None and stream.isatty():
        raise ImageStoreError(TERMINAL)
    store = ctx.store()
    if stream is None:
        store.save(refs, Path(output), format=layout)
        return
    store.save(refs, stream, format=layout)
    stream.flush()
