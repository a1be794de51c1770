"""The ``imagestore`` command: docker-style answers from a store whose daemon is not running.

Errors about the data print one line, ``imagestore: <message>``, and exit 1; usage errors
exit 2; a traceback is never shown (set ``IMAGESTORE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

import imagestore
from imagestore import db, report
from imagestore import fsck as checker
from imagestore.errors import ImageStoreError
from imagestore.store import Store

LS_COLUMNS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")


class Context:
    def __init__(self, root: str | None, index: str | None, readonly: bool, force: bool) -> None:
        self.root = root
        self.index = index
        self.readonly = readonly
        self.force = force
        self._store: Store | None = None

    def store(self, *, write: bool = False, sync: bool = True) -> Store:
        if self.root is None:
            raise click.UsageError("no store given: pass --root DIR or set IMAGESTORE_ROOT")
        if self._store is None:
            if write and self.readonly:
                raise ImageStoreError("this command writes to the store; drop --readonly")
            with progress_bar() as bar:
                self._store = imagestore.open(self.root, self.index, readonly=self.readonly,
                                              force=self.force, sync=sync, progress=bar)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(Context)


class ProgressBar:
    """A one-line progress bar on stderr, only on a terminal and only once a sync has taken
    more than a moment (a warm open never shows it)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.start < 1.0 or (now - self.last < 0.1 and done < total):
            return
        self.last, self.shown = now, True
        filled = 30 * done // max(total, 1)
        click.echo(f"\rsyncing {phase:<6} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}",
                   err=True, nl=False)

    def finish(self) -> None:
        if self.shown:
            click.echo("", err=True)


@contextlib.contextmanager
def progress_bar() -> Iterator[ProgressBar | None]:
    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.finish()


def output_options(*formats: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json`` (and ``--nl`` / ``--csv`` where asked) as one ``fmt`` argument."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(("json", *formats)):
            fn = click.option(f"--{name}", "fmt", flag_value=name,
                              help=f"Output {name.upper()}.")(fn)
        return fn

    return decorate


def emit(text: str) -> None:
    click.echo(text, nl=False)


def emit_ids(ids: Sequence[str], fmt: str | None) -> None:
    emit(report.to_json(list(ids)) + "\n" if fmt == "json" else "".join(i + "\n" for i in ids))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="IMAGESTORE_ROOT", metavar="DIR",
              help="Image root (…/image/<driver>) or a Docker data-root. [env: IMAGESTORE_ROOT]")
@click.option("--index", envvar="IMAGESTORE_INDEX", metavar="PATH|URL",
              help="Index file or SQLAlchemy URL (default: one SQLite file per root under "
                   "$XDG_STATE_HOME/imagestore). [env: IMAGESTORE_INDEX]")
@click.option("--readonly", is_flag=True,
              help="Never write under the root (evidence, mounted images); the index is kept.")
@click.option("--force", is_flag=True,
              help="Write even while a dockerd is using the root (it will not notice).")
@click.version_option(imagestore.__version__, prog_name="imagestore")
@click.pass_context
def cli(ctx: click.Context, root: str | None, index: str | None, readonly: bool,
        force: bool) -> None:
    """Docker's image store, read and written without a daemon, with a persistent SQL index."""
    ctx.obj = Context(root, index, readonly, force)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.option("--full", is_flag=True, help="Rebuild the index from scratch.")
@output_options()
@pass_ctx
def sync(ctx: Context, full: bool, fmt: str | None) -> None:
    """Bring the index up to date with the root; report counts and problems."""
    store = ctx.store(sync=not full)
    if full:
        with progress_bar() as bar:
            result = store.sync(full=True, progress=bar)
    else:
        result = store.last_sync or store.sync()
    if fmt == "json":
        emit(report.to_json(result.to_dict()) + "\n")
        return
    emit(f"added {result.added}, removed {result.removed}, changed {result.changed}, "
         f"unchanged {result.unchanged}, skipped {result.skipped}\n")
    for problem in result.problems:
        click.echo(f"problem: {problem.path}: {problem.reason}", err=True)


@cli.command()
@output_options()
@pass_ctx
def info(ctx: Context, fmt: str | None) -> None:
    """Where the root and its index are, the schema revision and what the index holds."""
    store = ctx.store()
    path = db.sqlite_path(str(store.engine.url))
    _, counts = report.run_sql(store, "SELECT (SELECT count(*) FROM images), "
                               "(SELECT count(*) FROM layers), (SELECT count(*) FROM tags), "
                               "(SELECT count(*) FROM problems)")
    images, layers, tags, problems = counts[0]
    data = {"root": str(store.root.path),
            "index": str(path) if path else store.engine.url.render_as_string(),
            "revision": db.current_revision(store.engine), "images": images,
            "layers": layers, "tags": tags, "problems": problems}
    if fmt == "json":
        emit(report.to_json(data) + "\n")
    else:
        emit("".join(f"{k}: {v}\n" for k, v in data.items()))


@cli.command("ls")
@click.option("-a", "--all", "all_images", is_flag=True, help="Show intermediate images too.")
@click.option("--dangling", is_flag=True, help="Only untagged heads.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("--no-trunc", is_flag=True, help="Full IDs in the table.")
@output_options("nl", "csv")
@pass_ctx
def ls_cmd(ctx: Context, all_images: bool, dangling: bool, quiet: bool, no_trunc: bool,
           fmt: str | None) -> None:
    """List images like `docker images`."""
    rows = report.image_rows(ctx.store(), all_images=all_images, dangling=dangling)
    keys = ["id", "repository", "tag", "created", "size", "parent"]
    if fmt == "json":
        emit(report.to_json(rows) + "\n")
    elif fmt == "nl":
        emit(report.to_nl(rows))
    elif fmt == "csv":
        emit(report.to_csv(keys, [[r[k] for k in keys] for r in rows]))
    elif quiet:
        seen = dict.fromkeys(r["id"] if no_trunc else _short(r["id"]) for r in rows)
        emit("".join(i + "\n" for i in seen))
    else:
        since = report.since_formatter()
        emit(report.to_table(LS_COLUMNS, [
            (r["repository"] or "<none>", r["tag"] or "<none>",
             r["id"] if no_trunc else _short(r["id"]), since(r["created"]),
             report.human_size(r["size"]))
            for r in rows]))


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@output_options()
@pass_ctx
def inspect(ctx: Context, refs: tuple[str, ...], fmt: str | None) -> None:
    """Full detail of images, as JSON (like `docker image inspect`)."""
    store = ctx.store()
    emit(report.to_json([report.inspect(store, store.resolve(r)) for r in refs]) + "\n")


@cli.command()
@click.argument("term")
@pass_ctx
def search(ctx: Context, term: str) -> None:
    """Print the full ID of the one image whose ID starts with TERM."""
    emit(ctx.store().search(term) + "\n")


@cli.command()
@click.argument("ref")
@output_options()
@pass_ctx
def parent(ctx: Context, ref: str, fmt: str | None) -> None:
    """Print the parent ID of an image (nothing when it has none)."""
    store = ctx.store()
    value = store.get_parent(store.resolve(ref))
    if fmt == "json":
        emit(report.to_json(value) + "\n")
    elif value:
        emit(value + "\n")


@cli.command()
@click.argument("ref")
@output_options()
@pass_ctx
def children(ctx: Context, ref: str, fmt: str | None) -> None:
    """Print the IDs of an image's children."""
    store = ctx.store()
    emit_ids(store.children(store.resolve(ref)), fmt)


@cli.command()
@output_options()
@pass_ctx
def heads(ctx: Context, fmt: str | None) -> None:
    """Print the IDs of images that no image names as parent."""
    emit_ids(sorted(ctx.store().heads()), fmt)


@cli.command()
@output_options()
@pass_ctx
def tree(ctx: Context, fmt: str | None) -> None:
    """Draw the parent forest, with tags beside the IDs."""
    roots = report.forest(ctx.store())
    if fmt == "json":
        emit(report.to_json([r.to_dict() for r in roots]) + "\n")
    else:
        emit("".join(line + "\n" for line in report.draw_forest(roots)))


@cli.command()
@click.argument("file", type=click.File("rb"))
@pass_ctx
def create(ctx: Context, file: Any) -> None:
    """Store an image config (FILE, or - for stdin) and print its ID."""
    data = file.read()
    emit(ctx.store(write=True).create(data) + "\n")


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--keep-tags", is_flag=True,
              help="Leave repositories.json alone (the store's Delete only).")
@output_options()
@pass_ctx
def rm(ctx: Context, refs: tuple[str, ...], keep_tags: bool, fmt: str | None) -> None:
    """Delete images as the store's Delete does; print what was removed.

    References to a deleted image are removed from repositories.json too (as `docker rmi`
    untags first), unless --keep-tags.
    """
    store = ctx.store(write=True)
    ids = [store.resolve(r) for r in refs]
    results = []
    for image_id in dict.fromkeys(ids):
        untagged = [] if keep_tags else store.untag(image_id)
        layers = store.delete(image_id)
        results.append({"id": image_id, "untagged": untagged,
                        "layers": [layer.chain_id for layer in layers]})
    if fmt == "json":
        emit(report.to_json(results) + "\n")
        return
    for r in results:
        emit("".join(f"Untagged: {t}\n" for t in r["untagged"]))
        emit(f"Deleted: {r['id']}\n")
        emit("".join(f"Deleted: {c}\n" for c in r["layers"]))


@cli.command("set-parent")
@click.argument("ref")
@click.argument("parent_ref", metavar="PARENT")
@pass_ctx
def set_parent(ctx: Context, ref: str, parent_ref: str) -> None:
    """Make PARENT the parent image of REF."""
    store = ctx.store(write=True)
    store.set_parent(store.resolve(ref), store.resolve(parent_ref))


@cli.command()
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, help="A value for a ? placeholder.")
@output_options("nl", "csv")
@pass_ctx
def sql(ctx: Context, query: str, params: tuple[str, ...], fmt: str | None) -> None:
    """Run one read-only SQL query on the index (see the views in the README)."""
    columns, rows = report.run_sql(ctx.store(), query, params)
    if fmt == "json":
        emit(report.to_json([dict(zip(columns, r, strict=True)) for r in rows]) + "\n")
    elif fmt == "nl":
        emit(report.to_nl(dict(zip(columns, r, strict=True)) for r in rows))
    elif fmt == "csv":
        emit(report.to_csv(columns, rows))
    else:
        emit(report.to_table(columns, rows))


@cli.command()
@click.option("--repair", is_flag=True,
              help="Remove temp files and orphan metadata, resync the index; nothing else.")
@output_options()
@pass_ctx
def fsck(ctx: Context, repair: bool, fmt: str | None) -> None:
    """Verify every digest, layer chain and parent link, and the index against the disk.

    Exit 0 when clean, 1 when something was found (after --repair: when something is left).
    """
    store = ctx.store(write=repair)
    findings = checker.check(store)
    repaired = checker.repair(store, findings) if repair else []
    left = [f for f in findings if f not in repaired]
    if fmt == "json":
        emit(report.to_json({"findings": [f.to_dict() for f in findings],
                             "repaired": [f.to_dict() for f in repaired]}) + "\n")
    else:
        for f in findings:
            mark = "repaired" if f in repaired else f.check
            emit(f"{mark}: {f.path}: {f.message} (action: {f.action})\n")
        emit(f"{len(findings)} problem(s), {len(repaired)} repaired\n")
    if left:
        sys.exit(1)


def _warn(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: Any = None, line: str | None = None) -> None:
    click.echo(f"imagestore: warning: {message}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    warnings.showwarning = _warn
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="imagestore",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("imagestore: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
        click.echo(f"imagestore: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ImageStoreError as exc:
        click.echo(f"imagestore: {_one_line(str(exc))}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("IMAGESTORE_DEBUG"):
            raise
        click.echo(f"imagestore: internal error: {_one_line(f'{type(exc).__name__}: {exc}')}",
                   err=True)
        sys.exit(1)


def _one_line(message: str) -> str:
    return " ".join(message.split())[:2000]


if __name__ == "__main__":
    main()
