"""A TCP proxy that cuts a link the way networks do, run as its own process by the tests.

``python partition_proxy.py TARGET_PORT --record DIR`` listens on a free port (printed as
JSON on stdout with its control port) and forwards to 127.0.0.1:TARGET_PORT.  A line on
the control port sets its mode:

``pass``   forward (the default)
``drop``   close every open connection and every new one at once (a refused link)
``stall``  accept connections and hold them, forwarding nothing (a link that hangs),
           until the mode changes, then close them
``stall-after N``  forward the next N connections, then stall (a link that goes dead in
           the middle of an exchange: replication opens a connection per message)
``stats``  answer how many connections were passed, dropped and stalled

With ``--record DIR`` the bytes each passed connection sent to the target are written to
``DIR/NNNNNN.req`` (one HTTP request each: replication opens a connection per message),
so a test can send them again later: duplicated, out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


class Proxy:
    def __init__(self, target: int, record: Path | None) -> None:
        self.target = target
        self.record = record
        self.mode = "pass"
        self.count = 0
        self.stats = {"passed": 0, "dropped": 0, "stalled": 0}
        self.open: set[asyncio.StreamWriter] = set()
        self.pass_budget: int | None = None
        self.changed = asyncio.Event()

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.pass_budget is not None:
            if self.pass_budget == 0:
                self.mode, self.pass_budget = "stall", None
            else:
                self.pass_budget -= 1
        if self.mode == "drop":
            self.stats["dropped"] += 1
            writer.transport.abort()
            return
        if self.mode == "stall":
            self.stats["stalled"] += 1
            self.open.add(writer)
            while self.mode == "stall":
                self.changed.clear()
                await self.changed.wait()
            self.open.discard(writer)
            writer.transport.abort()
            return
        self.stats["passed"] += 1
        self.count += 1
        n = self.count
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.open.update((writer, up_writer))
        sent = bytearray()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while True:
                    chunk = await src.read(65536)
                    if not chunk:
                        break
                    if keep is not None:
                        keep += chunk
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:  # noqa: BLE001
                    pass

        await asyncio.gather(pipe(reader, up_writer, sent), pipe(up_reader, writer, None))
        self.open.difference_update((writer, up_writer))
        if self.record is not None and sent:
            (self.record / f"{n:06d}.req").write_bytes(bytes(sent))

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := (await reader.readline()).decode().strip():
            if line.startswith("stall-after ") and line.split()[1].isdigit():
                self.mode, self.pass_budget = "pass", int(line.split()[1])
                self.changed.set()
                writer.write(b"ok\n")
            elif line in ("pass", "drop", "stall"):
                self.mode, self.pass_budget = line, None
                self.changed.set()
                if line == "drop":
                    for w in list(self.open):
                        w.transport.abort()
                    self.open.clear()
                writer.write(b"ok\n")
            elif line == "stats":
                writer.write((json.dumps({"mode": self.mode, **self.stats}) + "\n").encode())
            else:
                writer.write(b"unknown\n")
            await writer.drain()
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", type=int)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args()
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
    proxy = Proxy(args.target, args.record)
    server = await asyncio.start_server(proxy.client, "127.0.0.1", 0)
    control = await asyncio.start_server(proxy.control, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cport = control.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": port, "control": cport}) + "\n")
    sys.stdout.flush()
    async with server, control:
        await asyncio.gather(server.serve_forever(), control.serve_forever())


if __name__ == "__main__":
    asyncio.run(main())
