"""``prune``: ``docker image prune`` without the daemon (the library's
``imagestore.service.prune``), its lines printed as each image goes, as docker prints them.

A run that is stopped (Ctrl-C, SIGTERM) has removed what it printed; it ends with the
total so far, or with ``--json`` a document of what was done, marked interrupted.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from imagestore.cli.app import Context, cli, output_options, pass_ctx
from imagestore.cli.humanize import human_size
from imagestore.cli.output import emit
from imagestore.errors import ImageStoreError


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a prune as Ctrl-C does: between two records, never inside a write."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plan_text(plan: list[dict[str, Any]]) -> str:
    return "".join(f"{e['action']:<6}  {e['id']}  {' '.join(e['refs']) or '<none>'}: "
                   f"{e['reason']}\n" for e in plan) + "\n"


@cli.command()
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Every image no container uses, not just dangling ones.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="until=TIME|DURATION, label=K[=V], label!=K[=V] (as docker's).")
@click.option("--unused-for", metavar="DURATION",
              help="Keep images used, tagged or arrived within DURATION (e.g. 72h, 30d).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("-f", "--force", "_no_prompt", is_flag=True, hidden=True,
              help="Accepted for docker's sake: imagestore never prompts.")
@output_options()
@pass_ctx
def prune(ctx: Context, all_images: bool, filters: tuple[str, ...], unused_for: str | None,
          dry_run: bool, _no_prompt: bool, fmt: str | None) -> None:
    """Remove unused images as `docker image prune` does; report the space reclaimed."""
    from imagestore.service import prune as pruning

    if unused_for is not None:  # a flag's value: a usage error, before any store is opened
        try:
            pruning.unused_for_ns(unused_for)
        except ImageStoreError:
            raise click.UsageError(f"--unused-for: not a duration: {unused_for!r}") from None
    store = ctx.store(write=not dry_run)
    ctx.writable("prune")  # a containerd store: even a dry run plans docker's deletes
    streaming = fmt is None and not dry_run
    started = False

    def printed(record: tuple[str, str]) -> None:
        nonlocal started
        if not started:
            click.echo("Deleted Images:")
            started = True
        click.echo(f"{record[0]}: {record[1]}")

    try:
        with _terminate_as_interrupt():
            result = pruning.prune(store, filters=filters, all_images=all_images,
                                   unused_for=unused_for, dry_run=dry_run,
                                   on_record=printed if streaming else None)
    except pruning.PruneInterrupted as stopped:
        result = stopped.result
        if fmt is not None:
            emit(result.to_dict(), fmt, str)
        else:
            click.echo(f"\nTotal reclaimed space: {human_size(result.space_reclaimed, 4)} "
                       f"(interrupted)")
        click.echo("imagestore: interrupted", err=True)
        sys.exit(130)

    def text(d: dict[str, Any]) -> str:
        out = "\n" if started else ""
        if dry_run:
            if result.records:
                out += "Would delete Images:\n" + "".join(
                    f"{kind}: {value}\n" for kind, value in result.records) + "\n"
            out += _plan_text(result.plan)
        total = human_size(d["space_reclaimed"], precision=4)  # units.HumanSize
        return out + (f"Total reclaimable space: {total} (dry run: nothing was changed)\n"
                      if dry_run else f"Total reclaimed space: {total}\n")

    emit(result.to_dict(), fmt, text)
    for failure in result.failures:
        click.echo(f"imagestore: warning: {failure}", err=True)


__all__ = ["prune"]
