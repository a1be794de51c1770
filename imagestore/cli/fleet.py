"""``stores``: the stores one index holds (a fleet's hosts, an investigator's disk images),
and forgetting one. These see the whole index; every other command sees one store."""

from __future__ import annotations

from typing import Any

import click

from imagestore.cli.app import Context, Group, cli, output_options, pass_ctx
from imagestore.cli.output import Records, emit
from imagestore.cli.tabwriter import table

STORE_KEYS = ("name", "kind", "namespace", "host", "root", "driver", "images", "last_sync")
STORE_COLUMNS = ("NAME", "KIND", "NAMESPACE", "HOST", "ROOT", "DRIVER", "IMAGES", "LAST SYNC")
# The same table settings as docker's listings.
STORE_TABLE = (10, 1, 3, " ", 0)


@cli.group(cls=Group, invoke_without_command=True)
@output_options("nl", "csv")
@pass_ctx
def stores(ctx: Context, fmt: str | None) -> None:
    """List the stores of the index (--index, or the default index of --root), as it stands:
    no root is read or synced."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    rows = ctx.whole().stores()

    def text(_: Any) -> str:
        return table([STORE_COLUMNS, *(
            tuple("" if r[k] is None else str(r[k]) for k in STORE_KEYS) for r in rows)],
            STORE_TABLE)

    emit(Records(STORE_KEYS, [[r[k] for k in STORE_KEYS] for r in rows]) if fmt else rows,
         fmt, text)


@stores.command("rm")
@click.argument("name")
@pass_ctx
def stores_rm(ctx: Context, name: str) -> None:
    """Forget the store NAME: delete its rows from the index (no disk is touched)."""
    ctx.whole_index().forget(name)
    click.echo(f"Forgot store {name}")
