"""The web's side of the batching policy: LoopBatcher on a real asyncio loop and thread."""
from __future__ import annotations

import asyncio

import pytest

from web.errors import ApiError
from web.loop_batches import LoopBatcher


def test_submits_of_one_loop_turn_share_a_batch_and_each_gets_its_own_result():
    batches = []

    def process(items):
        batches.append(list(items))
        return [item * 10 for item in items]

    async def scenario():
        batcher = LoopBatcher(process, "test-batches", max_batch=10, max_waiting=100)
        try:
            return await asyncio.gather(*(batcher.submit(n) for n in (1, 2, 3)))
        finally:
            batcher.close()

    assert asyncio.run(scenario()) == [10, 20, 30]
    assert batches == [[1, 2, 3]]


def test_a_batch_that_waits_for_company_is_answered_503_when_the_batcher_closed_meanwhile():
    """A batch of one may wait a few ms for company (BATCH_WAIT_MS); if the process stops the
    batcher meanwhile, its caller is told to retry (nothing was stored), never left hanging."""
    processed = []

    async def scenario():
        batcher = LoopBatcher(lambda items: processed.extend(items) or items, "test-batches", max_batch=10,
                              max_waiting=100, wait_s=0.05)
        company = batcher._gatherer.company
        company.gap, company.brought = 0.001, 2.0  # items have come often, and waits brought company
        waiting = asyncio.ensure_future(batcher.submit("lone"))
        await asyncio.sleep(0)
        assert not waiting.done()
        batcher.close()
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(waiting, 5)
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status == 503 and refused.code == "not_ready"
    assert processed == []
