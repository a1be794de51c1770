"""``files``, ``which``, ``diff`` and ``waste``: images' filesystems from their layers' file
lists (read into the index on first need, with a progress bar on stderr when it takes long),
through ``imagestore.service.files``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from imagestore.cli.app import Context, cli, output_options, pass_ctx, progress_bar
from imagestore.cli.output import emit, lines

if TYPE_CHECKING:
    from imagestore.service.host import Host


def _host(ctx: Context) -> Host:
    """The store, of either kind (a containerd store reads its lists from its blobs)."""
    return ctx.store()


def _kind(entry: dict[str, Any]) -> str:
    link = f" -> {entry['link']}" if entry.get("link") else ""
    return f"{entry['type']:<8} {entry['size']:>12} {entry['path']}{link}"


@cli.command("files")
@click.argument("ref")
@output_options()
@pass_ctx
def files_cmd(ctx: Context, ref: str, fmt: str | None) -> None:
    """List an image's merged filesystem: one entry per path, sorted."""
    from imagestore.service.files import image_files

    store = _host(ctx)
    with progress_bar() as bar:
        found = [e.to_dict() for e in image_files(store, store.resolve(ref), bar)]
    emit(found, fmt, lambda rows: lines(_kind(r) for r in rows))


@cli.command("which")
@click.argument("pattern")
@click.option("--all-stores", is_flag=True, help="Every store of the index, not only this one.")
@output_options()
@pass_ctx
def which_cmd(ctx: Context, pattern: str, all_stores: bool, fmt: str | None) -> None:
    """Images whose filesystem holds PATTERN (a path or a shell glob; without / a file name
    in any folder), with their tags, store and the layer that brings it."""
    from imagestore.service.files import which

    store = _host(ctx)
    with progress_bar() as bar:
        found = which(store, pattern, all_stores=all_stores, progress=bar)

    def text(rows: list[dict[str, Any]]) -> str:
        return lines(f"{r['store']}  {r['image'][7:19]}  {','.join(r['tags']) or '<none>'}  "
                     f"/{r['path']}  layer {r['layer'][7:19]}" for r in rows)

    emit(found, fmt, text)


@cli.command("diff")
@click.argument("first")
@click.argument("second")
@output_options()
@pass_ctx
def diff_cmd(ctx: Context, first: str, second: str, fmt: str | None) -> None:
    """Paths added (A), removed (D) and changed (C) from image FIRST to image SECOND."""
    from imagestore.service.files import diff

    store = _host(ctx)
    with progress_bar() as bar:
        found = diff(store, store.resolve(first), store.resolve(second), bar)

    def text(d: dict[str, list[Any]]) -> str:
        rows = [(e["path"], "A") for e in d["added"]] + [(e["path"], "D") for e in d["removed"]]
        rows += [(e["path"], "C") for e in d["changed"]]
        return lines(f"{k} /{p}" for p, k in sorted(rows))

    emit(found, fmt, text)


@cli.command("waste")
@click.argument("ref")
@output_options()
@pass_ctx
def waste_cmd(ctx: Context, ref: str, fmt: str | None) -> None:
    """Wasted space as dive counts it: paths that more than one layer gives or removes, their
    bytes, and the image's efficiency."""
    from imagestore.service.files import waste

    store = _host(ctx)
    with progress_bar() as bar:
        found = waste(store, store.resolve(ref), bar)

    def text(d: dict[str, Any]) -> str:
        head = [f"efficiency {d['efficiency'] * 100:.4f} %",
                f"wasted {d['wasted_bytes']} bytes"]
        return lines(head + [f"{p['copies']:>3} {p['bytes']:>12} /{p['path']}"
                             for p in d["paths"]])

    emit(found, fmt, text)


__all__ = ["diff_cmd", "files_cmd", "waste_cmd", "which_cmd"]
