"""A local blob's bytes sent to a connected socket by a thread of the store: the file mapped a
window at a time, each window sent from the mapping with ``send``, until the range is out.

Why a thread that owns the socket for the body rather than the event loop's transport: the loop
does none of the work, and the thread's system calls are the only cost per byte.  Why sends from
a mapping rather than ``preadv`` into a reused buffer and sends from it: on loopback the pumping
thread, not the client, was the bottleneck of a page-cached download, and the buffer costs it a
second copy of every byte (the page cache into the buffer, the buffer into the socket: two
copies of about equal cost in a profile); the kernel copying straight from the mapped page-cache
pages into the socket does one, about a quarter less CPU per GiB for the thread
(docs/measured.md, ``python -m bench.download_paths``).  Each window is mapped ``MADV_SEQUENTIAL``,
so a blob that is not in the page cache is read ahead as a ``preadv`` would be, and unmapped once
sent: memory per download is one window of page-cache pages, no anonymous buffer.

The socket is a duplicate of the connection's fd, made by the caller and handed over: the thread
never sends on an fd number the loop might close and the process reuse.  The duplicate shares the
connection's non-blocking file status; ``settimeout`` keeps it so, and each ``send`` waits at
most the stall timeout for the client to take bytes (``TimeoutError`` then).  :meth:`stop` (from
the event loop) shuts the socket down, which fails the thread's next or current ``send`` at
once.  The pump closes its duplicate only on the event loop, once the thread is done, so a stop
can never reach a number the thread has already let go of.

A file found shorter than the range ends the pump short (``sent`` tells how far it got; the
caller cuts its connection), never with a signal or a wrong byte: nothing is mapped past the
size the file has when the window is mapped, the size is checked again before each send of at
most ``SEND_SLICE``, and the mapped bytes are only ever read by the kernel inside ``send``, where
a page truncated away fails the call (``EFAULT``) instead of raising SIGBUS.  No code of this
process reads the mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from blobstore.errors import translate_oserror

# Bytes of the file mapped at once, and the most one ``send`` is given (the file's size is checked
# before each).  4 MiB windows cost the thread about what 8 and 32 MiB did and less than 2 MiB
# (more mappings); 1 MiB sends kept the client's share of the work lower than whole-window sends,
# which block in the socket more often (docs/measured.md).
MAP_WINDOW = 4 << 20
SEND_SLICE = 1 << 20
_PAGE = mmap.ALLOCATIONGRANULARITY


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
        fd, pos, end = self._fd, self._start, self._end
        while pos < end:
            base = pos - pos % _PAGE
            try:
                stop = min(end, os.fstat(fd).st_size, base + MAP_WINDOW)
                if stop <= pos:
                    break  # the file is shorter than the range
                window = mmap.mmap(fd, stop - base, prot=mmap.PROT_READ, offset=base)
            except ValueError:
                break  # shorter still by the time of the mapping (mmap checks the size)
            except OSError as exc:
                raise translate_oserror(exc) from None
            try:
                window.madvise(mmap.MADV_SEQUENTIAL)
                sent = self._send_window(window, pos - base, stop - base, base)
            finally:
                window.close()
            pos += sent
            if pos < stop:
                break  # cut short inside the window
        return self.sent

    def _send_window(self, window: mmap.mmap, first: int, last: int, base: int) -> int:
        """Send ``window[first:last]`` in slices: the bytes sent, fewer when the file was found
        shorter (its size is checked before each slice; a page gone under ``send`` is EFAULT)."""
        send, fd = self._sock.send, self._fd
        pos = first
        with memoryview(window) as view:
            while pos < last:
                if self._stopped:
                    raise ConnectionAbortedError("download stopped")
                top = min(last, pos + SEND_SLICE, os.fstat(fd).st_size - base)
                if top <= pos:
                    break
                with view[pos:top] as out:
                    try:
                        k = send(out)
                    except OSError as exc:
                        if exc.errno != errno.EFAULT:
                            raise
                        if os.fstat(fd).st_size - base >= top:
                            raise translate_oserror(OSError(errno.EIO, "read failed")) from None
                        break  # truncated under the send
                self.sent += k
                pos += k
        return pos - first


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
