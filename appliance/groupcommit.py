"""Group commit: one thread per store writes what many callers queued, with one sync for all.

A durable write costs a few fsyncs whatever its size. Under load, writing each caller's record
with its own fsyncs serialises every request behind the disk; a committer thread instead drains
the queue, writes the whole batch, syncs once, and only then completes each caller's future. No
caller learns its item is stored before it is durable: the promise of a single write is kept, its
cost is shared (ADR 0009).

The store decides what "write a batch" means (``flush``); this module only queues, batches and
completes. ``flush`` returns one result per item (an exception instance fails just that item), or
raises: then every item of that batch fails with that exception (none of them was acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 64


class GroupCommitter(Generic[T, R]):
    """A daemon thread ``name`` that hands batches of up to ``max_batch`` items to ``flush``.

    ``submit`` is thread-safe; ``submit_async`` is for coroutines (the future is completed on
    the caller's event loop through ``call_soon_threadsafe``). ``close`` finishes what was queued.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._flush = flush
        self._max = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future completes once it is durable (or failed)."""
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the committer is closed")
            self._queue.put((item, future))
        return future

    def write(self, item: T) -> R:
        """Queue ``item`` and wait until it is durable; raises what ``flush`` raised."""
        return self.submit(item).result()

    async def submit_async(self, item: T) -> R:
        """Queue ``item`` and await it without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Write everything already queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._complete(batch)

    def _complete(self, batch: list[tuple[T, Future[R]]]) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._flush([item for item, _ in live])
        except BaseException as exc:  # handed to every waiter: none of them is acknowledged
            for _, fut in live:
                fut.set_exception(exc)
            return
        self.batches += 1
        self.items += len(live)
        for (_, fut), result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
