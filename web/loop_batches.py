"""Batches of blocking work from the IOLoop: the web side of `storage.batching.Gatherer`.

Callers on the IOLoop `submit` items and await their results. The first item of a batch
schedules the batch for the end of the current loop turn (so every request parsed in that
turn joins); one thread of its own runs `process(items)` for the whole batch (a database
transaction, a Redis pipeline) and hands all the results back in one hop. While a batch is
in flight the next one gathers. The intake and the per-key submission limiter both work so.

    IOLoop: submit -> Gatherer --take--> worker thread: process(items)
                      ^                                   |
                      +------ results (one hop) ----------+
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

from storage.batching import Gatherer
from web.errors import ApiError

T = TypeVar("T")
R = TypeVar("R")


class LoopBatcher(Generic[T, R]):
    """Runs `process` on batches of items submitted from the IOLoop, one batch at a time.

    `process` (on the batcher's thread) returns one result per item, an exception standing
    for that item's failure; if it raises, every item of the batch fails so. `on_results`
    (on the IOLoop thread) sees each batch's items and results before their callers do.
    """

    def __init__(self, process: Callable[[list[T]], list], name: str, max_batch: int, max_waiting: int,
                 on_results: Callable[[list[T], list], None] | None = None, wait_s: float = 0.0):
        self._process = process
        self._on_results = on_results
        self._max_waiting = max_waiting
        self._gatherer: Gatherer[tuple[T, asyncio.Future]] = Gatherer(max_batch, wait_s)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def submit(self, item: T) -> R:
        """Process `item` with the others of its batch; its result, or its exception raised
        (503 `not_ready` at once when too many are waiting: the thread is stuck or slow)."""
        if self._gatherer.waiting >= self._max_waiting:
            raise ApiError(503, "not_ready", "too many requests are waiting for storage; retry later")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._gatherer.add((item, future)):
            self._schedule(loop)
        return await future

    def _start(self) -> None:
        if not self._gatherer.due():  # it started early: company came while it waited
            return
        batch = self._gatherer.take()
        loop = asyncio.get_running_loop()
        try:
            work = loop.run_in_executor(self._executor, self._process, [item for item, _ in batch])
        except RuntimeError:  # closed (the process is stopping) while the batch waited for company
            work = loop.create_future()
            work.set_exception(ApiError(503, "not_ready", "the server is stopping; retry"))
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop, batch, done: asyncio.Future) -> None:
        """IOLoop thread: answer each caller of the batch, then start the next batch."""
        try:
            results = done.result()
        except Exception as exc:  # the whole batch failed the same way (a bug or an outage)
            results = [exc] * len(batch)
        if self._on_results is not None:
            self._on_results([item for item, _ in batch], results)
        for (_, future), result in zip(batch, results):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._gatherer.done():
            self._schedule(loop)

    def _schedule(self, loop) -> None:
        """Start the batch at the end of this loop turn, or after waiting a little for company."""
        wait = self._gatherer.wait()
        if wait:
            loop.call_later(wait, self._start)
        else:
            loop.call_soon(self._start)

    def close(self) -> None:
        """Let the thread go (a batch in flight finishes)."""
        self._executor.shutdown(wait=False)
