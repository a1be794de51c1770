"""The ``imagestore`` commands: docker-style answers from a store whose daemon is not
running. Each command opens the store, asks it (or the command line's queries), and hands
its answer to ``output.emit``.

What loads the index (SQLAlchemy, the sync) is imported inside the commands that need it:
``--help`` and usage errors answer without it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from imagestore.cli.app import Context, cli, output_options, pass_ctx, progress_bar
from imagestore.cli.output import Records, emit, lines, to_table
from imagestore.cli.tabwriter import table
from imagestore.errors import ImageStoreError, InvalidImageConfig
from imagestore.moby.digest import truncate_id
from imagestore.moby.files import MAX_FILE_SIZE

if TYPE_CHECKING:
    from imagestore import SyncReport

LS_COLUMNS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
LS_KEYS = ("id", "repository", "tag", "created", "size", "parent")
# docker/cli cli/command/formatter/formatter.go: tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)
LS_TABLE = (10, 1, 3, " ", 0)


def _ids(ids: list[str], fmt: str | None) -> None:
    emit(ids, fmt, lines)


@cli.command()
@click.option("--full", is_flag=True, help="Rebuild the index from scratch.")
@click.option("--files", "files", is_flag=True,
              help="Also read the file lists of layers not yet read (files, which, diff).")
@output_options()
@pass_ctx
def sync(ctx: Context, full: bool, files: bool, fmt: str | None) -> None:
    """Bring the index up to date with the root; report counts and problems."""
    store = ctx.store(sync=not full)
    if full:
        with progress_bar() as bar:
            result = store.sync(full=True, progress=bar)
    else:
        result = store.last_sync or store.sync()
    listed = None
    if files:
        if not hasattr(store, "read_files"):
            raise ImageStoreError("file lists are read from a classic store only")
        with progress_bar() as bar:
            listed = store.read_files(progress=bar)

    def text(_: Any) -> str:
        more = "" if listed is None else (f", file lists read {listed.layers} "
                                          f"({listed.entries} entries)")
        return (f"added {result.added}, removed {result.removed}, changed {result.changed}, "
                f"unchanged {result.unchanged}, skipped {result.skipped}{more}\n")

    emit(result.to_dict() | ({} if listed is None else {"files": listed.to_dict()}), fmt, text)
    if listed is not None and fmt != "json":
        for layer, reason in listed.problems:
            click.echo(f"problem: layer {layer}: {reason}", err=True)
    if fmt != "json":
        _problems(result)


def _problems(result: SyncReport) -> None:
    for problem in result.problems:
        click.echo(f"problem: {problem.path}: {problem.reason}", err=True)


@cli.command()
@output_options()
@pass_ctx
def info(ctx: Context, fmt: str | None) -> None:
    """Where the root and its index are, the schema revision and what the index holds.

    Without --root: the store --name names, as the index holds it, or with no --name the
    index itself (its stores and images); nothing is synced."""
    data: dict[str, Any]
    if ctx.root is None and ctx.name is None:
        whole = ctx.whole()
        rows = whole.stores()
        data = {"index": whole.location(), "revision": whole.revision(), "stores": len(rows),
                "images": sum(int(r["images"]) for r in rows)}
    else:
        store = ctx.reader()
        with store.index.read() as q:
            counts = q.counts()
        data = {"root": str(store.root.path), "index": store.index.location(),
                "revision": store.index.revision(), **counts,
                **({"store": ctx.name} if ctx.root is None else {})}
    emit(data, fmt, lambda d: "".join(f"{k}: {v}\n" for k, v in d.items()))


@cli.command("ls")
@click.option("-a", "--all", "all_images", is_flag=True, help="Show intermediate images too.")
@click.option("--dangling", is_flag=True, help="Only untagged heads.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="As docker images --filter: dangling, label, before, since, reference "
                   "(and until on a containerd store).")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("--no-trunc", is_flag=True, help="Full IDs in the table.")
@output_options("nl", "csv")
@pass_ctx
def ls_cmd(ctx: Context, all_images: bool, dangling: bool, filters: tuple[str, ...],
           digests: bool, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    """List images like `docker images`."""
    from imagestore.service.listing import listed

    if quiet and fmt:
        raise click.UsageError(f"-q and --{fmt} cannot be combined")
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"bad format of filter (expected name=value): {item!r}")
        wanted.setdefault(key.strip().lower(), []).append(value)
    if dangling:
        wanted.setdefault("dangling", []).append("true")
    rows = listed(ctx.reader(), all_images=all_images, filters=wanted, digests=digests)
    columns = (*LS_COLUMNS[:2], "DIGEST", *LS_COLUMNS[2:]) if digests else LS_COLUMNS

    def text(_: Any) -> str:
        # docker/cli's images formatter: -q prints {{.ID}} for every row, so an image with
        # several tags prints its ID once per tag; the table goes through Go's tabwriter.
        if quiet:
            return lines(r["id"] if no_trunc else truncate_id(r["id"]) for r in rows)
        from imagestore.cli.humanize import human_size, since_formatter

        since = since_formatter()
        return table([columns, *(
            (r["repository"] or "<none>", r["tag"] or "<none>",
             *((r.get("digest") or "<none>",) if digests else ()),
             r["id"] if no_trunc else truncate_id(r["id"]), since(r["created"]),
             human_size(r["size"]))
            for r in rows)], LS_TABLE)

    keys = (*LS_KEYS, "digest") if digests else LS_KEYS
    # The records only for a format that needs them: building them costs (docs/performance.md).
    data = Records(keys, [[r.get(k) for k in keys] for r in rows]) if fmt else rows
    emit(data, fmt, text)


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@output_options()
@pass_ctx
def inspect(ctx: Context, refs: tuple[str, ...], fmt: str | None) -> None:
    """Full detail of images, as JSON (like `docker image inspect`)."""
    from imagestore.service.listing import described

    store = ctx.reader()
    emit([described(store, r) for r in refs], "json")


@cli.command()
@click.argument("term")
@pass_ctx
def search(ctx: Context, term: str) -> None:
    """Print the full ID of the one image whose ID starts with TERM."""
    emit([ctx.reader().search(term)], None, lines)


@cli.command()
@click.argument("ref")
@output_options()
@pass_ctx
def parent(ctx: Context, ref: str, fmt: str | None) -> None:
    """Print the parent ID of an image (nothing when it has none)."""
    store = ctx.reader()
    emit(store.get_parent(store.resolve(ref)), fmt, lambda v: lines([v] if v else []))


@cli.command()
@click.argument("ref")
@output_options()
@pass_ctx
def children(ctx: Context, ref: str, fmt: str | None) -> None:
    """Print the IDs of an image's children."""
    store = ctx.reader()
    _ids(store.children(store.resolve(ref)), fmt)


@cli.command()
@output_options()
@pass_ctx
def heads(ctx: Context, fmt: str | None) -> None:
    """Print the IDs of images that no image names as parent."""
    _ids(sorted(ctx.reader().heads()), fmt)


@cli.command()
@output_options()
@pass_ctx
def tree(ctx: Context, fmt: str | None) -> None:
    """Draw the parent forest, with tags beside the IDs."""
    from imagestore.cli.forest import draw_forest
    from imagestore.service.listing import forest

    roots = forest(ctx.reader())
    emit([r.to_dict() for r in roots], fmt, lambda _: lines(draw_forest(roots)))


@cli.command()
@click.argument("file", type=click.File("rb"))
@pass_ctx
def create(ctx: Context, file: Any) -> None:
    """Store an image config (FILE, or - for stdin) and print its ID."""
    data = file.read(MAX_FILE_SIZE + 1)  # never more: a huge file is refused, not loaded
    if len(data) > MAX_FILE_SIZE:
        raise InvalidImageConfig(f"{file.name} is larger than the {MAX_FILE_SIZE} bytes an "
                                 f"image config may have")
    emit([ctx.store(write=True).create(data)], None, lines)


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", "force_delete", is_flag=True,
              help="Untag every reference and delete even with stopped containers "
                   "(never an image a running container uses, nor one with children).")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents.")
@output_options()
@pass_ctx
def rm(ctx: Context, refs: tuple[str, ...], force_delete: bool, no_prune: bool,
       fmt: str | None) -> None:
    """Remove images as `docker rmi` does: untag, delete, release layers, prune parents."""
    from imagestore.errors import ImageNotFound
    from imagestore.service.delete import remove, summary

    done = remove(ctx.store(write=True), refs, force=force_delete, prune=not no_prune)
    emit(summary(done.deleter, done.deleter.reported), fmt, lambda _: lines(
        f"{kind.capitalize()}: {value}" for kind, value in done.deleter.reported))
    for failure in done.deleter.failures:
        click.echo(f"imagestore: warning: {failure}", err=True)
    errors = done.errors
    for exc in errors:
        click.echo(f"imagestore: {exc}", err=True)
    # docker rmi -f: images not found are not an error
    if errors and (not force_delete or not all(isinstance(e, ImageNotFound) for e in errors)):
        sys.exit(1)


@cli.command()
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET[:TAG]")
@pass_ctx
def tag(ctx: Context, source: str, target: str) -> None:
    """Make TARGET a reference to the image SOURCE names (as `docker tag`)."""
    from imagestore.moby.references import split_reference

    store = ctx.store(write=True)
    repository, tag_, digest = split_reference(target)
    if digest is not None:
        raise click.UsageError(f"refusing to create a tag with a digest reference: {target}")
    store.tag(store.resolve(source), repository, tag_)


@cli.command()
@output_options("nl", "csv")
@pass_ctx
def namespaces(ctx: Context, fmt: str | None) -> None:
    """The namespaces of a containerd root (--root), each with its image records, images,
    blobs, snapshots, containers and leases, read from its meta.db (no index)."""
    import imagestore

    if ctx.root is None:
        raise click.UsageError("no root given: pass --root DIR (a containerd root)")
    rows = imagestore.namespaces(ctx.root)
    keys = ("namespace", "records", "images", "blobs", "snapshots", "containers", "leases")
    emit(Records(keys, [[r[k] for k in keys] for r in rows]) if fmt else rows, fmt,
         lambda _: table([tuple(k.upper() for k in keys),
                          *(tuple(str(r[k]) for k in keys) for r in rows)], LS_TABLE))


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
@click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              metavar="SECONDS", help="Stop the query after this long (0: never).")
@click.option("--allow-privileged-role", is_flag=True,
              help="On PostgreSQL, run even as a role that can read the server's files or "
                   "stop other sessions (a superuser, pg_read_server_files, "
                   "pg_signal_backend...).")
@output_options("nl", "csv")
@pass_ctx
def sql(ctx: Context, query: str, params: tuple[str, ...], timeout: float,
        allow_privileged_role: bool, fmt: str | None) -> None:
    """Run one read-only SQL query on the index (see the views in the README).

    Without --root it runs on the index alone (--index), as it stands; with one, once that
    store is up to date. Rows are printed as they come; Ctrl-C stops the query (exit 130)."""
    columns, rows = ctx.query(query, params, timeout or None,
                              allow_privileged_role=allow_privileged_role)
    emit(Records(columns, rows), fmt, to_table)


@cli.command()
@click.option("--repair", is_flag=True,
              help="Remove leftovers, orphan metadata, tags of missing images, unreferenced "
                   "failed creates and driver folders nothing uses; finish interrupted "
                   "deletes; rebuild or resync the index; nothing else.")
@click.option("--layers", is_flag=True,
              help="Also rebuild every layer's tar (written nowhere) and name each missing or "
                   "changed file.")
@output_options()
@pass_ctx
def fsck(ctx: Context, repair: bool, layers: bool, fmt: str | None) -> None:
    """Verify every digest, layer chain and parent link, the index against the disk, and the
    graph driver's folders.

    Exit 0 when clean, 1 when something was found (after --repair: when something is left).
    """
    store = ctx.store(write=repair)
    findings = store.check(layers=layers)
    repaired = store.repair(findings) if repair else []

    def text(_: Any) -> str:
        return "".join(f"{'repaired' if f in repaired else f.check}: {f.path}: {f.message} "
                       f"(action: {f.action})\n" for f in findings) + \
            f"{len(findings)} problem(s), {len(repaired)} repaired\n"

    emit({"findings": [f.to_dict() for f in findings],
          "repaired": [f.to_dict() for f in repaired]}, fmt, text)
    if any(f not in repaired for f in findings):
        sys.exit(1)


__all__ = ["cli"]
