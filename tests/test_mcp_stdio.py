"""The MCP server's stdin and stdout on the event loop (comity.mcp._stdio): lines come out
whole however the bytes arrive, a message larger than the pipe waits for the reader
without stopping the loop, stray output stays off the wire, and anything but a pipe keeps
the SDK's own streams.  (The whole server over stdio, with the official client, is in
tests/test_mcp_server.py and the faces' conformance suite.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import threading

from comity.mcp._stdio import _Lines, _Out, loop_stdio


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


def test_lines_come_out_whole_however_the_bytes_arrive() -> None:
    r, w = _pipe()
    chunks = [b'{"a":1}\n{"b"', b':2}\n', "{\"c\":\"é\"}\n".encode()[:7], "{\"c\":\"é\"}\n".encode()[7:], b"\xff\xfe\n", b"tail"]

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        got: list[str] = []

        async def feed() -> None:
            for c in chunks:
                await asyncio.sleep(0.001)
                os.write(w, c)
            os.close(w)

        task = asyncio.ensure_future(feed())
        async for line in _Lines(loop, r):
            got.append(line)
        await task
        return got

    try:
        assert asyncio.run(main()) == ['{"a":1}\n', '{"b":2}\n', '{"c":"é"}\n', "\ufffd\ufffd\n", "tail"]
    finally:
        os.close(r)


def test_a_line_larger_than_a_read_is_whole() -> None:
    r, w = _pipe()
    big = b'{"v":"' + b"x" * 300_000 + b'"}\n'

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        t = threading.Thread(target=lambda: (os.write(w, big), os.write(w, b"{}\n"), os.close(w)))
        t.start()
        got = [line async for line in _Lines(loop, r)]
        t.join()
        return got

    try:
        assert [len(x) for x in asyncio.run(main())] == [len(big), 3]
    finally:
        os.close(r)


def test_a_message_larger_than_the_pipe_waits_for_the_reader_and_the_loop_runs_meanwhile() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    message = "y" * 1_000_000 + "\n"
    received = bytearray()

    def read_slowly() -> None:
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                return
            received.extend(chunk)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        ticks = 0
        done = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        out = _Out(loop, w)
        await out.write(message)
        await out.flush()
        done.set()
        await ticker
        return ticks

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        ticks = asyncio.run(main())
    finally:
        os.close(w)
        reader.join()
        os.close(r)
    assert received.decode() == message
    assert ticks > 0  # the loop ran other tasks while the pipe was full


_SERVE = textwrap.dedent(
    """
    import asyncio, os, sys
    from comity.mcp._stdio import loop_stdio

    async def main():
        async with loop_stdio() as pipes:
            if pipes is None:
                print("fallback", file=sys.stderr, flush=True)
            else:
                stdin, stdout = pipes
                async for line in stdin:
                    print("stray print", flush=True)  # fd 1 is stderr while serving
                    os.write(1, b"stray write\\n")
                    await stdout.write("echo " + line)
                    await stdout.flush()
        os.write(1, b"after\\n")  # fd 1 is the wire again

    asyncio.run(main())
    """
)


def test_stray_output_stays_off_the_wire_and_the_descriptors_come_back() -> None:
    p = subprocess.run([sys.executable, "-c", _SERVE], input=b"one\ntwo\n", capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"echo one\necho two\nafter\n"
    assert p.stderr.count(b"stray print") == 2 and p.stderr.count(b"stray write") == 2


def test_anything_but_a_pipe_keeps_the_sdks_streams() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(b"one\n")
        f.seek(0)
        p = subprocess.run([sys.executable, "-c", _SERVE], stdin=f, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"fallback" in p.stderr and p.stdout == b"after\n"


def test_the_pipes_are_left_blocking_as_they_were() -> None:
    """The flags of a pipe belong to every process holding it: the server puts them back."""
    code = _SERVE + textwrap.dedent(
        """
        print(os.get_blocking(0), os.get_blocking(1), file=sys.stderr)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], input=b"x\n", capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip().splitlines()[-1] == b"True True"
