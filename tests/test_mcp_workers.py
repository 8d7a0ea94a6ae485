"""The MCP server's tool-call threads (comity.mcp._workers): answers and errors come back to
their caller, calls beyond the bound wait their turn, idle threads end, a cancelled caller
waits for its call to finish."""

from __future__ import annotations

import contextvars
import threading
import time

import anyio
import pytest

pytest.importorskip("mcp")

from comity.mcp._workers import Workers  # noqa: E402

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


def test_answers_errors_and_context_come_back() -> None:
    pool = Workers()

    async def main() -> None:
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        assert await pool.run(threading.get_ident) != threading.get_ident()
        where.set("caller")
        assert await pool.run(where.get) == "caller"
        with pytest.raises(KeyError, match="nope"):
            await pool.run({}.__getitem__, "nope")

    anyio.run(main)


def test_calls_beyond_the_bound_wait_their_turn_and_idle_threads_end() -> None:
    pool = Workers(most=2, idle_s=0.2)
    running = 0
    most = 0
    lock = threading.Lock()

    def slow(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return i

    async def main() -> list[int]:
        out: list[int] = []

        async def one(i: int) -> None:
            out.append(await pool.run(slow, i))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        return out

    assert sorted(anyio.run(main)) == list(range(8))
    assert most == 2
    deadline = time.monotonic() + 5
    while pool._threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool._threads == 0


def test_a_cancelled_caller_waits_for_its_call() -> None:
    pool = Workers()
    done = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        done.set()

    async def main() -> None:
        with anyio.move_on_after(0.01):
            await pool.run(slow)
        assert done.is_set()  # the scope was cancelled, and the call had finished first

    anyio.run(main)
