"""The ``imagestore`` command's frame: global options, the store a command opens, the
progress bar, and how errors end a run.

Errors about the data print one line, ``imagestore: <message>``, and exit 1; usage errors
exit 2; a traceback is never shown (set ``IMAGESTORE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import click

import imagestore
from imagestore.errors import DaemonRunning, ImageStoreError, IndexCorrupt

if TYPE_CHECKING:
    from imagestore.opening import Index, Result
    from imagestore.reading import Reading
    from imagestore.service.host import Host


class Whole(Protocol):
    """An index for what concerns all its stores: ``Index`` or ``QuickWhole``."""

    def stores(self) -> list[dict[str, Any]]: ...

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None, *,
            allow_privileged_role: bool = False) -> Result: ...

    def location(self) -> str: ...

    def revision(self) -> str | None: ...

    def close(self) -> None: ...


class Context:
    def __init__(self, root: str | None, index: str | None, readonly: bool, force: bool,
                 name: str | None = None, keep_env: bool = False,
                 rename_root: bool = False, namespace: str | None = None,
                 platform: str | None = None, docker_root: str | None = None) -> None:
        self.root = root
        self.namespace = namespace
        self.platform = platform
        self.docker_root = docker_root
        self.index = index
        self.readonly = readonly
        self.force = force
        self.name = name
        self.keep_env = keep_env
        self.rename_root = rename_root
        self.writes = False  # the command asked for a writable store
        self._store: Host | None = None
        self._quick: Reading | None = None
        self._quick_failed = False
        self._all: Index | None = None
        self._whole: Whole | None = None
        self._named: Reading | None = None

    def reader(self) -> Reading:
        """The store for a command that only reads: through the quick index (no SQLAlchemy,
        no write) when it is at the schema head and nothing changed on disk since the last
        sync, else opened and synced as ``store`` does. Without a root, the store ``--name``
        names, as the index holds it (``named``)."""
        if self.root is None and self.name is not None:
            return self.named()
        if self._store is None and self._quick is None and not self._quick_failed \
                and self.root is not None and not self.rename_root:
            from imagestore.opening import open_quick

            self._quick = open_quick(self.root, self.index, name=self.name,
                                     namespace=self.namespace, platform=self.platform,
                                     docker_root=self.docker_root)
        return self._quick or self.store()

    def store(self, *, write: bool = False, sync: bool = True) -> Host:
        if self.root is None:
            raise click.UsageError("no store given: pass --root DIR or set IMAGESTORE_ROOT")
        self.writes |= write
        if self._store is None:
            if write and self.readonly:
                raise ImageStoreError("this command writes to the store; drop --readonly")
            with progress_bar() as bar:
                self._store = imagestore.open(self.root, self.index, readonly=self.readonly,
                                              force=self.force, sync=sync, progress=bar,
                                              name=self.name, keep_env=self.keep_env,
                                              rename_root=self.rename_root,
                                              namespace=self.namespace,
                                              platform=self.platform,
                                              docker_root=self.docker_root)
        if write:
            self.writable()
        return self._store

    def writable(self, what: str | None = None) -> None:
        """Refuse, in one line, a command that writes (or plans writes) on a kind of store
        imagestore only reads (containerd's), before anything is done."""
        store = self.store()
        refuse = getattr(store, "refuse", None)
        if refuse is not None:
            refuse(what or click.get_current_context().info_name or "this command")

    def named(self) -> Reading:
        """The store ``--name`` names, read as the index holds it: no root is read or synced
        (it may be gone, or on another host), nothing is written."""
        if self._named is None:
            from pathlib import Path

            from imagestore.reading import Reading

            assert self.name is not None
            index = self.whole_index()
            self._named = Reading(Path(index.select(self.name).root or "/"), index)
        return self._named

    def whole(self) -> Whole:
        """The index with all its stores, as it stands (no root is read, nothing synced):
        through sqlite3 alone when it is a local file at the schema head, else the engine's
        (which migrates it)."""
        if self._whole is None:
            from imagestore.opening import open_quick_index

            self._whole = open_quick_index(self._where()) or self.whole_index()
        return self._whole

    def whole_index(self) -> Index:
        """The index with all its stores: ``--index``, or the default index of ``--root``."""
        if self._all is None:
            from imagestore.opening import open_index

            self._all = open_index(self._where())
        return self._all

    def _where(self) -> str:
        if self.index is not None:
            return self.index
        if self.root is not None:
            from imagestore.opening import default_index

            return default_index(self.root)
        raise click.UsageError("no index given: pass --index PATH|URL (or --root DIR for that "
                               "root's default index)")

    def query(self, query: str, params: Sequence[Any], timeout: float | None, *,
              allow_privileged_role: bool = False) -> Result:
        """``sql``: with a root, on its index once the store is up to date (as every command
        on a store); without one, on the index alone, as it stands."""
        if self.root is None:
            return self.whole().sql(query, params, timeout,
                                    allow_privileged_role=allow_privileged_role)
        reading = self.reader()
        if self._store is not None:  # opened by the engine: the index may be a server's
            return self._store.index.sql(query, params, timeout,
                                         allow_privileged_role=allow_privileged_role)
        return reading.index.sql(query, params, timeout)  # the quick index: a local file

    def close(self) -> None:
        if self._whole is not None and self._whole is not self._all:
            self._whole.close()
        if self._quick is not None:
            self._quick.close()
        if self._store is not None:
            self._store.close()
        if self._all is not None:
            self._all.close()

    def recover(self, exc: IndexCorrupt) -> bool:
        """After a command met a damaged index: set it aside and rebuild it from the root
        (unless ``--readonly``); True when the command may simply run again (it wrote
        nothing)."""
        if self._quick is not None:  # read without the engine: it opens the index again,
            self._quick.close()      # and rebuilds what it finds corrupt
            self._quick, self._quick_failed = None, True
            return True
        store = self._store
        if store is None or self.readonly:
            raise exc
        warnings.warn(f"{exc}; rebuilding it", stacklevel=2)
        store.rebuild()
        if self.writes:
            raise ImageStoreError(f"index {store.index.location()} was corrupt and has been "
                                  f"rebuilt from the root; the command may have changed the "
                                  f"disk before it failed: check, and run it again")
        return True


class Command(click.Command):
    """Runs once more after a damaged index was rebuilt, when it wrote nothing (twice when
    the quick index met the damage first: the engine's open may find it too)."""

    def invoke(self, ctx: click.Context) -> Any:
        for attempt in range(3):
            try:
                return super().invoke(ctx)
            except IndexCorrupt as exc:
                obj = ctx.find_object(Context)
                if attempt == 2 or obj is None or not obj.recover(exc):
                    raise
        return None


class Group(click.Group):
    command_class = Command


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
    """``--json`` (and ``--nl`` / ``--csv`` where asked) as one ``fmt`` argument; asking
    for two formats at once is a usage error, not a silent choice."""

    def chosen(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value:
            return
        given = ctx.meta.setdefault("imagestore.formats", [])
        given.append(param.name)
        if len(given) > 1:
            raise click.UsageError(f"--{given[0]} and --{given[1]} cannot be combined", ctx)
        ctx.meta["imagestore.format"] = param.name

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            for name in ("json", *formats):
                kwargs.pop(name, None)
            ctx = click.get_current_context()
            return fn(*args, fmt=ctx.meta.get("imagestore.format"), **kwargs)

        for name in reversed(("json", *formats)):
            run = click.option(f"--{name}", name, is_flag=True, callback=chosen,
                               expose_value=True, help=f"Output {name.upper()}.")(run)
        return run

    return decorate


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="IMAGESTORE_ROOT", metavar="DIR",
              help="Image root (…/image/<driver>) or a Docker data-root. [env: IMAGESTORE_ROOT]")
@click.option("--index", envvar="IMAGESTORE_INDEX", metavar="PATH|URL",
              help="Index file or SQLAlchemy URL (default: one SQLite file per root under "
                   "$XDG_STATE_HOME/imagestore). [env: IMAGESTORE_INDEX]")
@click.option("--readonly", is_flag=True,
              help="Never write under the root (evidence, mounted images); the index is kept.")
@click.option("--force", is_flag=True,
              help="Write even while a dockerd is using the root (it will not notice).")
@click.option("--name", envvar="IMAGESTORE_NAME", metavar="NAME",
              help="The store's name in the index, which may hold many stores (default: "
                   "HOST:/real/path of the image root). [env: IMAGESTORE_NAME]")
@click.option("--keep-env", is_flag=True,
              help="On a server index, keep configs' Env values and build arguments "
                   "(redacted by default; a local file keeps them always).")
@click.option("--rename-root", is_flag=True,
              help="Give --name to this root although another root holds it (a moved "
                   "data-root, a disk image mounted elsewhere): the store is read again "
                   "whole from this root.")
@click.option("--namespace", envvar="IMAGESTORE_NAMESPACE", metavar="NS",
              help="On a containerd root: the namespace (default moby, Docker 29's; k8s.io on "
                   "a Kubernetes node). [env: IMAGESTORE_NAMESPACE]")
@click.option("--platform", envvar="IMAGESTORE_PLATFORM", metavar="OS/ARCH[/VARIANT]",
              help="On a containerd root: the platform whose manifest answers for a "
                   "multi-platform image (default: this host's). [env: IMAGESTORE_PLATFORM]")
@click.option("--docker-root", envvar="IMAGESTORE_DOCKER_ROOT", metavar="DIR",
              help="On a containerd root: the Docker data-root that uses it (its containers "
                   "count in Containers). [env: IMAGESTORE_DOCKER_ROOT]")
@click.version_option(imagestore.__version__, prog_name="imagestore")
@click.pass_context
def cli(ctx: click.Context, root: str | None, index: str | None, readonly: bool,
        force: bool, name: str | None, keep_env: bool, rename_root: bool,
        namespace: str | None, platform: str | None, docker_root: str | None) -> None:
    """Docker's image store, read and written without a daemon, with a persistent SQL index.

    The root is a classic Docker image root or data-root, or a containerd root
    (/var/lib/containerd: Docker 29, Kubernetes nodes), which is read only."""
    ctx.obj = Context(root, index, readonly, force, name, keep_env, rename_root, namespace,
                      platform, docker_root)
    ctx.call_on_close(ctx.obj.close)


def _warn(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: Any = None, line: str | None = None) -> None:
    click.echo(f"imagestore: warning: {message}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    with warnings.catch_warnings():  # every warning of this run, printed as one line
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _warn
        _main(argv)


def _main(argv: Sequence[str] | None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="imagestore",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        click.echo("imagestore: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
        click.echo(f"imagestore: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except DaemonRunning as exc:
        click.echo(f"imagestore: {_one_line(exc.message('--force'))}", err=True)
        sys.exit(1)
    except ImageStoreError as exc:
        click.echo(f"imagestore: {_one_line(str(exc))}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except OSError as exc:  # a path the tool could not read or write, and why
        if os.environ.get("IMAGESTORE_DEBUG"):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        click.echo(f"imagestore: cannot access{where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("IMAGESTORE_DEBUG"):
            raise
        click.echo(f"imagestore: internal error: {_one_line(f'{type(exc).__name__}: {exc}')}",
                   err=True)
        sys.exit(1)


def _one_line(message: str) -> str:
    return " ".join(message.split())[:2000]
