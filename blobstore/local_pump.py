"""A local blob's bytes sent to a connected socket by a thread of the store: ``preadv`` into one
reused buffer, then ``send`` from it, until the range is out.

Why a thread that owns the socket for the body rather than the event loop's transport: on this
VM a page-cached file sent from a reused buffer that stays in the CPU's cache goes out at about
the rate of a server sending from memory, where ``sendfile`` or a mapped window (the kernel
copying DRAM-cold page-cache pages into the socket) go out about a third slower, and the loop
itself does none of the work (docs/measured.md, ``python -m bench.download_paths``).

The socket is a duplicate of the connection's fd, made by the caller and handed over: the thread
never sends on an fd number the loop might close and the process reuse.  The duplicate shares the
connection's non-blocking file status; ``settimeout`` keeps it so, and each ``send`` waits at
most the stall timeout for the client to take bytes (``TimeoutError`` then).  :meth:`stop` (from
the event loop) shuts the socket down, which fails the thread's next or current ``send`` at
once.  The pump closes its duplicate only on the event loop, once the thread is done, so a stop
can never reach a number the thread has already let go of.

A file found shorter than the range ends the pump short (``sent`` tells how far it got; the
caller cuts its connection): ``preadv`` of a truncated file returns what is left, never a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from blobstore.errors import translate_oserror

# The buffer each pump reads into and sends from, reused for the whole body: 1 MiB went out
# faster than 128-512 KiB (more system calls) and than 2-4 MiB (out of the CPU's cache) on this
# VM (docs/measured.md).
PUMP_BUFFER = 1 << 20


class SocketPump:
    """Sends ``[start, end)`` of the open file ``fd`` to ``sock`` (a duplicate the pump owns
    and closes) from a thread of ``pool``; :meth:`run` once, on the event loop."""

    __slots__ = (
        "_end",
        "_fd",
        "_on_done",
        "_pool",
        "_sock",
        "_start",
        "_stopped",
        "_timeout",
        "sent",
        "thread",
    )

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        fd: int,
        start: int,
        end: int,
        sock: socket.socket,
        stall_timeout: float,
        on_done: Callable[[SocketPump], None],
    ) -> None:
        self._pool = pool
        self._on_done = on_done
        self._fd = fd
        self._start = start
        self._end = end
        self._sock = sock
        self._timeout = stall_timeout
        self._stopped = False
        self.sent = 0  # body bytes the socket took so far (written by the thread)
        # The thread's work once started: whoever owns ``fd`` closes it only after this.
        self.thread: asyncio.Future[int] | None = None

    async def run(self) -> int:
        """Send the range; the bytes sent (fewer than asked when the file is shorter).

        Raises what the send raised (``TimeoutError`` after the stall timeout without a byte
        taken, a ``ConnectionError`` when the client went away or :meth:`stop` was called) or
        the store's error for a failed read.  Cancelled, it stops the thread and returns at
        once; the duplicate is closed and ``on_done`` called (on the event loop) once the
        thread is out either way."""
        sock = self._sock
        sock.settimeout(self._timeout)  # non-blocking underneath, as the connection's fd is
        fut = self.thread = asyncio.get_running_loop().run_in_executor(self._pool, self._pump)

        def finished(_: object) -> None:
            sock.close()
            self._on_done(self)

        fut.add_done_callback(finished)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.stop()
            raise

    def abandon(self) -> None:
        """Give the thread back if :meth:`run` was never called (the duplicate is closed)."""
        if self.thread is None:
            self._sock.close()
            self._on_done(self)

    def stop(self) -> None:
        """Make the thread give up now (from the event loop; harmless once it is done)."""
        self._stopped = True
        if self._sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _pump(self) -> int:
        view = memoryview(bytearray(PUMP_BUFFER))
        send = self._sock.send
        fd, pos, end = self._fd, self._start, self._end
        while pos < end:
            if self._stopped:
                raise ConnectionAbortedError("download stopped")
            try:
                n = os.preadv(fd, [view[: min(PUMP_BUFFER, end - pos)]], pos)
            except OSError as exc:
                raise translate_oserror(exc) from None
            if n == 0:
                break  # the file is shorter than the range
            pos += n
            out = view[:n]
            while out:
                k = send(out)
                self.sent += k
                out = out[k:]
        return self.sent


class PumpThreads:
    """The threads that pumps run on, ``count`` at most at once."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._pool = ThreadPoolExecutor(max(1, count), thread_name_prefix="blobstore-pump")
        self._running: set[SocketPump] = set()

    def new(
        self, fd: int, start: int, end: int, sock: socket.socket, stall_timeout: float
    ) -> SocketPump | None:
        """A pump with a thread of its own, or None when all are taken: a pump holds its
        thread for as long as its client takes, so pumps are never queued."""
        if len(self._running) >= self._count:  # (a count of 0: never)
            return None
        pump = SocketPump(self._pool, fd, start, end, sock, stall_timeout, self._running.discard)
        self._running.add(pump)
        return pump

    async def close(self) -> None:
        """Stop every pump, then wait for the threads."""
        for pump in list(self._running):
            pump.stop()
        await asyncio.to_thread(self._pool.shutdown, True)
