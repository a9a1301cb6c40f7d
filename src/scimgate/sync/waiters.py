"""Read-your-writes: each target's confirmed cursor, the newest change seen, and who waits.

A SCIM write that wants its HAProxy effect confirmed everywhere before it answers waits here
(an asyncio future on the API's event loop, or a thread); followers report each confirmed
cursor, and every wait whose seq all targets passed is released at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _resolve_all(futs: list[asyncio.Future[bool]], value: bool) -> None:
    for fut in futs:
        _resolve(fut, value)


class Waiters:
    """Confirmed cursors per target, the head seq (the newest change any thread saw), and
    the pending waits. Any thread may call any method."""

    def __init__(self, targets: Iterable[str]) -> None:
        # _cond (and its lock): _cursors, _head, _futures, _closed. A leaf lock: only
        # loop.call_soon_threadsafe (which never blocks) is called while holding it.
        self._cond = threading.Condition()
        self._cursors: dict[str, int] = dict.fromkeys(targets, 0)
        self._head = 0
        self._futures: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._closed = False

    # ---- progress

    def saw_head(self, seq: int) -> None:
        """A change up to ``seq`` exists (committed): the head never moves back."""
        with self._cond:
            if seq > self._head:
                self._head = seq

    @property
    def head(self) -> int:
        with self._cond:
            return self._head

    def advanced(self, target: str, cursor: int) -> None:
        """``target`` has applied every change up to ``cursor``: release whoever that
        satisfies."""
        with self._cond:
            self._cursors[target] = cursor
            low = self._low()
            done = [w for w in self._futures if w[0] <= low]
            if done:
                self._futures = [w for w in self._futures if w[0] > low]
                # One hand-over per event loop, not per wait: each wakes the loop (a write
                # to its self-pipe), and a batch releases every writer it covers at once.
                by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
                for _seq, loop, fut in done:
                    by_loop.setdefault(loop, []).append(fut)
                for loop, futs in by_loop.items():
                    loop.call_soon_threadsafe(_resolve_all, futs, True)
            self._cond.notify_all()

    def cursor(self, target: str) -> int:
        with self._cond:
            return self._cursors[target]

    def cursors(self) -> dict[str, int]:
        with self._cond:
            return dict(self._cursors)

    def low(self) -> int:
        """The lowest confirmed cursor (the head when there are no targets)."""
        with self._cond:
            return self._low()

    def lag(self, target: str) -> int:
        """Changes ``target`` has not applied yet (that this process knows of)."""
        with self._cond:
            return max(0, self._head - self._cursors[target])

    def _low(self) -> int:
        return min(self._cursors.values(), default=self._head)

    # ---- waits

    async def wait(self, seq: int, timeout: float) -> bool:
        """True once every target has applied every change up to ``seq``; False on timeout
        or close (the event loop is never blocked: :meth:`advanced` resolves the future)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (seq, loop, fut)
        with self._cond:
            if self._low() >= seq:
                return True
            if self._closed:
                return False
            self._futures.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            with self._cond:
                if entry in self._futures:
                    self._futures.remove(entry)

    def wait_sync(self, seq: int, timeout: float) -> bool:
        """:meth:`wait` for threads (CLI, tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._low() >= seq, timeout)

    def close(self) -> None:
        """Release every wait with False; later waits that are not satisfied return False."""
        with self._cond:
            self._closed = True
            for _seq, loop, fut in self._futures:
                loop.call_soon_threadsafe(_resolve, fut, False)
            self._futures.clear()
            self._cond.notify_all()
