"""The writers of one SQLite store file across processes, in a queue (docs/throughput.md).

SQLite lets one writer at a time into a file.  One that finds it taken sleeps in its busy
handler (1, 2, 5, … then 100 ms between tries) and a writer that commits wakes nobody, so
under many writer processes the unlucky ones sleep 100 ms again and again (a claim's p99
under 32 agent processes was most of a second) while the lock stands free.

A process whose write had to wait joins the queue: a file beside the store
(``STORE-writers``) holds a ticket counter and a slot (one byte) per ticket.  A writer takes
the next ticket, holds its slot with an open-file-description lock (``F_OFD_SETLK``), waits
until the slot of the ticket before its own is let go, and lets its own go after it commits.
The kernel wakes the one writer blocked on a slot that is let go, and no other: the next
writer starts as soon as the one before commits, and the rest sleep (an ``flock`` queue,
which wakes every waiter at each turn, was tried and lost to that herd with more processes
than cores).  A process that has found no writer ahead of it 32 times running leaves the
queue, so a lone writer pays nothing for it but two reads of the monotonic clock.

The queue only orders the waits.  SQLite's lock still keeps writers apart, and a writer
that cannot use the queue (the file cannot be made, another process stopped while it held
its place, a wait longer than ``QUEUE_WAIT_S``) writes as before, through the busy handler:
a writer that leaves the queue, whatever the way, costs those behind it at most one wait,
never a write.  The kernel lets go of a dead process's slots.  What here reads time does so
only to choose how to wait; nothing it decides changes what a write does or means.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time

_OFD: tuple[int, int] | None
try:
    import fcntl

    _OFD = (fcntl.F_OFD_SETLK, fcntl.F_OFD_SETLKW)
except (ImportError, AttributeError):  # not Linux: no open-file-description locks, no queue
    _OFD = None

__all__ = ["WriterQueue", "QUEUE_SUFFIX", "QUEUE_WAIT_S", "SLOW_BEGIN_S", "CALM_TO_LEAVE"]

QUEUE_SUFFIX = "-writers"
# A BEGIN IMMEDIATE that took longer than this waited for another process's writer: join.
SLOW_BEGIN_S = 0.002
# Entries in a row that found no writer ahead before a process leaves the queue.
CALM_TO_LEAVE = 32
# The longest a writer waits for the one before it before writing through the busy handler.
QUEUE_WAIT_S = 1.0

_TICKET_AT = 0  # 8 bytes, little-endian: the next ticket
_MUTEX_AT = 64  # locked while a ticket is taken
_SLOTS_AT = 4096
_SLOTS = 4096  # a slot is reused 4,096 tickets later; a writer that finds it held skips the queue
# struct flock (Linux): l_type, l_whence, l_start, l_len, l_pid, padded to 32 bytes
_FLOCK = struct.Struct("hhxxxxqqixxxx")
_MUTEX_TRIES = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


def _lock_arg(kind: int, at: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, at, 1, 0)


class WriterQueue:
    """The queue of one store file's writers, for this process (held by its writers' gate).
    A process holds one place in it at a time: a write's (:meth:`enter`) or a turn's, held
    across a read and the write that depends on it (:meth:`take_turn`)."""

    def __init__(self, store_path: str) -> None:
        self.path = f"{store_path}{QUEUE_SUFFIX}"
        self.usable = _OFD is not None
        self.joined = False  # this process's writes go through the queue
        self.turn = -1  # the slot of a turn held across several transactions (take_turn)
        self._entry = threading.Lock()  # one place in the queue at a time for this process
        self._turn_held = threading.Lock()
        self._store_path = store_path
        self._fd = -1
        self._pid = -1
        self._calm = 0
        # the thread that waits for a slot, so that a writer's wait can end at QUEUE_WAIT_S
        self._waiter: threading.Thread | None = None
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._mu = threading.Lock()
        self._at = -1
        self._busy = False  # the waiter is blocked on a slot
        self._abandoned = False  # ... for a writer that stopped waiting
        self._closing = False
        self.stats = {"joined": 0, "entered": 0, "waited": 0, "gave_up": 0, "skipped": 0}

    # ------------------------------------------------------------------ joining and leaving

    def join(self) -> None:
        """A write of this process waited for another's: queue from the next one on."""
        if self.usable and not self.joined:
            self.joined = True
            self._calm = 0
            self.stats["joined"] += 1

    def enter(self, timeout: float = QUEUE_WAIT_S) -> int:
        """Wait for this process's turn among the store's writers.  Returns the slot to let
        go (:meth:`leave`) once the write is committed or rolled back, or -1 if the queue
        was not used (the caller's BEGIN IMMEDIATE waits as SQLite's busy handler does, and
        so does a write of a process that holds a turn: it is that turn's)."""
        with self._entry:
            if self.turn >= 0:
                return -1
            return self._enter(timeout)

    def take_turn(self, timeout: float = QUEUE_WAIT_S) -> bool:
        """Hold this process's place across several transactions, until :meth:`end_turn`.
        False (and nothing held) if the process has not joined the queue, cannot use it, or
        another of its threads holds a turn."""
        if not self.joined or not self._turn_held.acquire(False):
            return False
        with self._entry:
            self.turn = self._enter(timeout)
        if self.turn < 0:
            self._turn_held.release()
            return False
        return True

    def end_turn(self) -> None:
        slot, self.turn = self.turn, -1
        self.leave(slot)
        self._turn_held.release()

    def _enter(self, timeout: float) -> int:
        if not self.usable or self._pid != os.getpid() and not self._open():
            return -1
        if self._busy:  # an earlier wait of this process is still blocked on a stopped writer
            self.stats["skipped"] += 1
            return -1
        fd = self._fd
        assert _OFD is not None
        setlk, setlkw = _OFD
        mine = -1
        try:
            if not self._take_mutex(fd, setlk):
                self.stats["skipped"] += 1
                return -1
            try:
                ticket = int.from_bytes(os.pread(fd, 8, _TICKET_AT).ljust(8, b"\0"), "little")
                mine = _SLOTS_AT + ticket % _SLOTS
                try:
                    fcntl.fcntl(fd, setlk, _lock_arg(fcntl.F_WRLCK, mine))
                except OSError as e:
                    mine = -1
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    self.stats["skipped"] += 1  # the writer 4,096 tickets back still holds it
                    return -1
                os.pwrite(fd, (ticket + 1).to_bytes(8, "little"), _TICKET_AT)
            finally:
                fcntl.fcntl(fd, setlk, _lock_arg(fcntl.F_UNLCK, _MUTEX_AT))
            self.stats["entered"] += 1
            before = _SLOTS_AT + (ticket - 1) % _SLOTS
            try:
                fcntl.fcntl(fd, setlk, _lock_arg(fcntl.F_WRLCK, before))
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                self._calm = 0
                self.stats["waited"] += 1
                if not self._wait(before, timeout):
                    self.stats["gave_up"] += 1
                return mine
            fcntl.fcntl(fd, setlk, _lock_arg(fcntl.F_UNLCK, before))
            self._calm += 1
            if self._calm >= CALM_TO_LEAVE:
                self.joined = False
            return mine
        except OSError:
            self.leave(mine)
            self._broken()
            return -1

    def leave(self, slot: int) -> None:
        """Let the next writer go (after this one's COMMIT or ROLLBACK)."""
        if slot >= 0 and self._fd >= 0:
            try:
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _lock_arg(fcntl.F_UNLCK, slot))
            except OSError:
                self._broken()

    def close(self) -> None:
        """Let go of the file, unless a wait of this process is still blocked on it (then
        its thread and descriptor stay until the process ends)."""
        with self._mu:
            if self._busy:
                return
            self._closing = True
        if self._waiter is not None:
            self._go.release()  # wakes the waiter, which sees _closing and ends
            self._waiter.join()
            self._waiter = None
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1
        self.usable = False
        self.joined = False

    # ------------------------------------------------------------------ inside

    def _open(self) -> bool:
        """Open (or make) the queue file: on first use, and in a forked child, whose
        inherited descriptor shares its parent's locks."""
        try:
            try:
                mode = os.stat(self._store_path).st_mode & 0o666
            except OSError:
                mode = 0o600
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        except OSError:
            self._broken()
            return False
        self._fd = fd
        self._pid = os.getpid()
        # a forked child has none of its parent's threads: its own waiter, its own locks
        self._waiter = None
        self._go, self._done, self._mu = threading.Lock(), threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._busy = self._abandoned = False
        return True

    def _broken(self) -> None:
        """The queue file cannot be used here (a read-only directory, a filesystem without
        such locks): write as before, through the busy handler."""
        self.usable = False
        self.joined = False

    def _take_mutex(self, fd: int, setlk: int) -> bool:
        """The ticket counter's lock, held for two system calls.  Tried without blocking, so
        that a process stopped while it held it stops nobody for more than ~40 ms."""
        arg = _lock_arg(fcntl.F_WRLCK, _MUTEX_AT)
        for pause in (*_MUTEX_TRIES, None):
            try:
                fcntl.fcntl(fd, setlk, arg)
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if pause is None:
                return False
            time.sleep(pause)
        return False

    def _wait(self, at: int, timeout: float) -> bool:
        """Wait until the slot at ``at`` is let go, at most ``timeout`` seconds.  The waiting
        itself is a blocking lock in a thread of this queue, so that it can be given up."""
        if self._waiter is None:
            self._waiter = threading.Thread(target=self._run, name=f"comity writers' queue {self.path}", daemon=True)
            self._waiter.start()
        with self._mu:
            self._at = at
            self._busy = True
        self._go.release()
        if self._done.acquire(True, timeout):
            return True
        with self._mu:
            if self._busy:
                self._abandoned = True
                return False
        self._done.acquire()  # it got the slot just as the wait ended: take its word
        return True

    def _run(self) -> None:
        fd = self._fd
        assert _OFD is not None
        setlk, setlkw = _OFD
        while True:
            self._go.acquire()
            if self._closing:
                return
            at = self._at
            try:
                fcntl.fcntl(fd, setlkw, _lock_arg(fcntl.F_WRLCK, at))
                fcntl.fcntl(fd, setlk, _lock_arg(fcntl.F_UNLCK, at))
            except OSError:
                pass  # the writer goes on through the busy handler either way
            with self._mu:
                self._busy = False
                if self._abandoned:
                    self._abandoned = False
                    continue
            self._done.release()
