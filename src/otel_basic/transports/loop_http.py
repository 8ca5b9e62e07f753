"""One OTLP/HTTP request sent from the app's event loop, on a non-blocking keep-alive connection.

Why: an export thread that runs beside a busy event loop pays for every GIL hand-off with it (two
futex calls and a context switch each, on both sides; measured on the email workflow, the same spans
cost the export thread 1.13 ms per run sent per step and 0.75 ms sent once per block). A request
written by the loop itself, and answered through the loop's selector, trades the GIL with nobody.
This module is only that one attempt: retries, backoff, splitting and the spool stay on the export
workers (:meth:`otel_basic.road.Road.resume` takes over any answer but a delivery).

The request bytes are :class:`~otel_basic.transports.http_conn.FastConnection`'s (same headers, same
Basic auth from the URL, same TLS context); ``h11`` parses the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncGenerator
from typing import cast

import h11
import httpx

from otel_basic.loop_slot import LoopSlot
from otel_basic.transports.http_conn import ANSWER_SECONDS, FastConnection

__all__ = ["LoopPoster"]

#: A request out when its task is cancelled (``asyncio.run``'s end cancels every pending task, and so may a
#: server's shutdown) waits this much longer for its answer while the loop still runs. Given up at once, it
#: went to the workers, which sent it again: a review found 16-62% of the spans of a script that makes one
#: run per ``asyncio.run`` delivered twice, even to a 0 ms endpoint (a collector route counts them twice).
END_WAIT = 0.5


class _Answer(asyncio.Protocol):
    """One connection; one request at a time; the answer as an ``httpx.Response`` (for ``classify``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: h11.Connection | None = None
        self._waiter: asyncio.Future[httpx.Response] | None = None
        self._written = 0.0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's TCPTransport has write/close but is no asyncio.Transport subclass (an
        # isinstance check here failed every loop export under uvloop, with a traceback in the app's log).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the endpoint closed the connection"))

    def post(self, request: bytes, waiter: asyncio.Future[httpx.Response]) -> None:
        assert self.transport is not None
        # h11 frames the answer from the request it was given: a request without a body stands in for
        # ours (a response's framing does not depend on the request's, except for HEAD).
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method="POST", target="/", headers=[("Host", "-"), ("Content-Length", "0")]))
        parser.send(h11.EndOfMessage())
        self._parser, self._waiter = parser, waiter
        self._status, self._headers, self._body = 0, [], []
        self.transport.write(request)
        self._written = time.monotonic()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        try:
            parser.receive_data(data)
            while (event := parser.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    self._status, self._headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    self._body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self._done(parser)
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("the endpoint closed the connection mid-answer")
        except (h11.ProtocolError, ConnectionError) as exc:
            self._fail(exc)
            self.close()

    def eof_received(self) -> bool | None:
        if self._parser is not None:  # h11 reads an empty chunk as the close: an answer it frames ends here
            self.data_received(b"")
        return None  # close the transport

    def _done(self, parser: h11.Connection) -> None:
        length = dict(self._headers).get(b"content-length")
        if length is not None and not length.strip().isdigit():  # as http_conn: not an answer to trust
            self._fail(ConnectionError("the answer's Content-Length is not a number"))
            self.close()
            return
        waited = time.monotonic() - self._written
        response = httpx.Response(
            self._status, headers=self._headers, content=b"".join(self._body), extensions={ANSWER_SECONDS: waited}
        )
        keep = parser.their_state is h11.DONE and parser.our_state is h11.DONE
        self._parser = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        self._parser = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """One loop's idle connections, kept on the loop (:class:`~otel_basic.loop_slot.LoopSlot`)."""

    def __init__(self) -> None:
        self.idle: list[_Answer] = []
        self.closer: AsyncGenerator[None, None] | None = None

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


async def _closing(pool: _Pool) -> AsyncGenerator[None, None]:
    """Started once per loop: ``asyncio.run`` closes the loop's async generators before it closes the
    loop (``shutdown_asyncgens``), and with this one the idle connections, while the loop still runs."""
    try:
        yield
    finally:
        pool.close()


class LoopPoster:
    """POSTs to one URL from whichever event loop calls it, on that loop's own keep-alive connections
    (one per request out at once; idle ones are reused). Each loop only touches its own; :meth:`close`
    from another thread asks each loop to close its own."""

    def __init__(self, direct: FastConnection) -> None:
        self._direct = direct
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._slot = LoopSlot(_Pool)

    async def _pool(self, loop: asyncio.AbstractEventLoop) -> _Pool:
        pool, made = self._slot.setdefault(loop, _Pool)
        if pool is None:
            raise AttributeError("this event loop takes no attributes: no loop path here")
        if made:
            self._loops.add(loop)
            pool.closer = _closing(pool)
            await pool.closer.__anext__()
        return pool

    async def post(self, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
        """One POST within ``timeout`` seconds; raises on any network or protocol error (the
        connection is then closed), ``TimeoutError`` when the time ran out."""
        loop = asyncio.get_running_loop()
        idle = (await self._pool(loop)).idle
        conn: _Answer | None = None
        while idle and conn is None:
            conn = idle.pop()
            if conn.closed:
                conn = None
        try:
            if conn is None:
                host, port, context = self._direct.address()
                async with asyncio.timeout(timeout):  # in this task (wait_for made one per connection)
                    _, conn = await loop.create_connection(
                        _Answer, host, port, ssl=context, server_hostname=host if context else None
                    )
            assert conn is not None
            waiter: asyncio.Future[httpx.Response] = loop.create_future()
            timer = loop.call_at(loop.time() + timeout, _time_out, waiter)  # not wait_for: no task per request
            conn.post(self._direct.request_bytes(body, headers), waiter)
            try:
                response = await _answer(loop, waiter)
            finally:
                timer.cancel()
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        assert conn is not None
        if not conn.closed:
            idle.append(conn)
        return response

    def close(self) -> None:
        """Close every loop's idle connections, each on its own loop (a closed loop's go with it)."""
        for loop in list(self._loops):
            if (pool := self._slot.get(loop)) is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(pool.close)

    def forget(self) -> None:
        """After ``fork()``: the parent's connections are not the child's to use or to close (they stay
        on the loops under the old name, and go with them)."""
        self._loops = weakref.WeakSet()
        self._slot = LoopSlot(_Pool)


async def _answer(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[httpx.Response]) -> httpx.Response:
    """The answer to the request just written. Cancelled meanwhile: the request is at the endpoint, so
    its answer, not a resend, settles it, if it comes within :data:`END_WAIT` (a second cancel: given up)."""
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        end = loop.call_later(END_WAIT, _time_out, waiter)
        try:
            return await asyncio.shield(waiter)
        finally:
            end.cancel()


def _time_out(waiter: asyncio.Future[httpx.Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no complete answer before the deadline"))
