"""The replication commands: ``comity replica clone|status`` and ``comity sync`` (``comity seq reserve`` is the
``seq_reserve`` verb, in :mod:`comity.cli`)."""

from __future__ import annotations

import json
import sys
import time  # the CLI's --watch waits in real time between exchanges
from typing import Any

import click

from .clikit import Ctx, command, err, out
from .errors import ComityError, Invalid

__all__ = ["register"]


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    """Add ``replica`` and ``sync`` to the ``comity`` command."""
    from . import sync as replication

    def local(obj: Ctx) -> Any:
        if obj.remote:
            raise Invalid("store", "this needs a store (a replica file, a path or a postgresql:// URL), not a server")
        return obj.store()

    @cli.group("replica")
    def replica_group() -> None:
        """Replicas: store files of the same store that work cut off and merge with `comity sync`."""

    @command(replica_group, "clone")
    @click.argument("source")
    @click.argument("dest")
    def clone_cmd(obj: Ctx, source: str, dest: str, *, as_json: bool) -> None:
        """Make DEST (a new store file) a replica of SOURCE: a store path, a postgresql:// URL, or a
        server's http:// URL (with an admin token in --auth). DEST gets its own replica id and
        records SOURCE as its upstream."""
        made = replication.clone(source, dest, auth=obj.auth)
        if as_json:
            _print(made)
        else:
            out.print(f"replica {made['replica']} of store {made['store']} at {made['location']}", markup=False)
            err.print(f"upstream: {made['upstream']}; agents use it with --store {made['location']}", markup=False)

    @command(replica_group, "status")
    @click.option("--hash", "with_hash", is_flag=True, help="Also hash every key's state (equal on replicas that converged; reads every key).")
    def status_cmd(obj: Ctx, with_hash: bool, *, as_json: bool) -> None:
        """This replica: its id, upstream, when the upstream was last reached, its digest, what it holds in escrow."""
        st = replication.status(local(obj), with_hash=with_hash)
        if as_json:
            _print(st)
            return
        out.print(f"replica {st['replica']} of store {st['store']} at {st['location']}", markup=False)
        if st["upstream"]:
            reached = "never" if st["last_reached"] is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["last_reached"]))
            out.print(f"upstream {st['upstream']} (last reached {reached})", markup=False)
        else:
            out.print("no upstream: this store is its own authority", markup=False)
        for e in st["escrow"]:
            out.print(f"escrowed: {e['remaining']} numbers of sequence {e['sequence']} {e['blocks']}", markup=False)
        if with_hash:
            out.print(f"state {st['state_hash']} ({st['keys']} keys)", markup=False)

    @command(cli, "sync")
    @click.option("--with", "peer", metavar="SOURCE", help="Sync with this replica of the store (a path, postgresql:// or http:// URL); default: the upstream.")
    @click.option("--watch", is_flag=True, help="Keep syncing, every --interval seconds, until interrupted; a failed exchange is retried.")
    @click.option("--interval", type=click.FloatRange(0.05, 86400), default=2.0, show_default=True, help="Seconds between exchanges with --watch.")
    @click.option("--repair", is_flag=True, help="Also compare every key's state by digest and exchange what differs (reads every key).")
    def sync_cmd(obj: Ctx, peer: str | None, watch: bool, interval: float, repair: bool, *, as_json: bool) -> None:
        """Exchange what differs with the upstream (or --with SOURCE), both ways: concurrent values become
        siblings, CRDTs merge, events keep their dot, agent and time. JSON: {"sent", "received", "bytes", …}."""
        store = local(obj)
        while True:
            try:
                result = replication.sync_with(store, peer, auth=obj.auth).to_json()
                if repair:
                    result["repair"] = replication.repair_with(store, peer, auth=obj.auth)
            except ComityError as e:
                if not watch:
                    raise
                if as_json:
                    _print(e.to_json())
                err.print(f"comity: {e.message}", markup=False, style="red")
            else:
                if as_json:
                    _print(result)
                else:
                    _say(result)
            if not watch:
                return
            time.sleep(interval)

    def _say(r: dict[str, Any]) -> None:
        state = "in sync" if r["in_sync"] else "not yet in sync (run again)"
        out.print(
            f"sent {r['sent']} events ({r['keys_sent']} keys), received {r['received']} ({r['keys_received']} keys),"
            f" {r['bytes']} bytes with {r['peer']}: {state}",
            markup=False,
        )
        for f in r["fenced"]:
            lost = ", ".join(f"{x['resource']} token {x['token']} (now {x['current']})" for x in f["fenced_by"])
            err.print(f"fenced: {f['agent']}'s write of {f['key']} under {lost}; kept in {f['conflict']}", markup=False)
        if "repair" in r:
            rp = r["repair"]
            out.print(f"repair: {rp['differing']} of {rp['buckets']} leaves differed; {rp['keys_received']} keys in, {rp['keys_sent']} out", markup=False)
