"""stdin and stdout for the MCP server, read and written on the event loop.

The SDK's stdio transport (``mcp.server.stdio.stdio_server``) reads each line and writes
and flushes each message through ``anyio.to_thread``: three thread hand-offs per tool
call, which under callgrind cost more than a whole ``read`` verb in the store.  When
both descriptors are pipes or sockets (as when an agent host starts the server), this
module hands the SDK's transport two objects that do the same on the event loop, with
non-blocking descriptors: a line is read when the loop sees the pipe readable, a message
is written when it can be (waiting for the pipe to drain when it is full).  The SDK's
transport still parses and frames every message; only how bytes cross the descriptors
changes.  Anything else (a terminal, a file, another event loop than asyncio's) keeps
the SDK's own streams.

As the SDK does, while serving, fd 0 reads the null device and fd 1 writes to stderr, so
a stray ``print`` or a child process cannot corrupt the wire; both are restored on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["loop_stdio"]

_CHUNK = 1 << 16


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
    """Until ``fd`` is readable (or writable)."""
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class _Lines:
    """``async for line in …``: UTF-8 lines of a non-blocking descriptor, as the SDK's text
    wrapper gives them (undecodable bytes replaced, the newline kept)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop, self._fd = loop, fd
        self._buf = bytearray()
        self._scanned = 0  # no newline before this offset of the buffer
        self._eof = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                self._scanned = 0
                return line.decode("utf-8", "replace")
            self._scanned = len(self._buf)
            if self._eof:
                if not self._buf:
                    raise StopAsyncIteration
                line = bytes(self._buf)
                self._buf.clear()
                self._scanned = 0
                return line.decode("utf-8", "replace")
            try:
                chunk = os.read(self._fd, _CHUNK)
            except BlockingIOError:
                await _ready(self._loop, self._fd, write=False)
                continue
            if chunk:
                self._buf += chunk
            else:
                self._eof = True


class _Out:
    """``write`` then ``flush``, as the SDK's transport calls them, on a non-blocking descriptor."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop, self._fd = loop, fd
        self._pending = bytearray()

    async def write(self, text: str) -> None:
        self._pending += text.encode("utf-8")

    async def flush(self) -> None:
        while self._pending:
            try:
                n = os.write(self._fd, self._pending)
            except BlockingIOError:
                await _ready(self._loop, self._fd, write=True)
                continue
            del self._pending[:n]


@contextlib.asynccontextmanager
async def loop_stdio() -> AsyncIterator[tuple[Any, Any] | None]:
    """``(stdin, stdout)`` for ``stdio_server(stdin, stdout)`` while serving, or None when the
    SDK's own streams must serve (not pipes, or not on asyncio's loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        yield None
        return
    if not (_is_pipe(0) and _is_pipe(1)):
        yield None
        return
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    blocking = (os.get_blocking(wire_in), os.get_blocking(wire_out))
    try:
        os.set_blocking(wire_in, False)
        os.set_blocking(wire_out, False)
        yield _Lines(loop, wire_in), _Out(loop, wire_out)
    finally:
        # The pipes' flags are shared with whoever else holds them: put them back.
        with contextlib.suppress(OSError):
            os.set_blocking(wire_in, blocking[0])
            os.set_blocking(wire_out, blocking[1])
        for fd, wire in ((0, wire_in), (1, wire_out)):
            with contextlib.suppress(OSError):
                os.dup2(wire, fd)
            with contextlib.suppress(OSError):
                os.close(wire)
