"""A router on a broker where no tools process has advertised yet: calfkit's capability view catches
up at the short wait (arena/compat/table_catchup.py), not behind its 500 ms first fetch, and once the
router is READY the view's reader is the polling policy's again at its own wait. Own broker: its
calf.capabilities must be empty."""

from __future__ import annotations

import asyncio

import pytest

from arena.config import CONSUMER_TUNING, KafkaSettings

pytestmark = [pytest.mark.processes, pytest.mark.asyncio]


@pytest.mark.timeout(120)
async def test_a_router_on_a_fresh_broker_catches_its_capability_view_up_at_the_short_wait(monkeypatch):
    from aiokafka.client import AIOKafkaClient
    from calfkit.models.capability import CAPABILITY_VIEW_RESOURCE_KEY

    from arena import polling
    from arena.broker import EmbeddedBroker, free_port
    from arena.router import Router

    pacer = polling.Pacer(idle_ms=300, quiet_s=0.0, startup_s=0.0)  # nothing due: long waits unless busy
    monkeypatch.setattr(polling, "PACER", pacer)
    topics_waits: list[tuple[set[str], int]] = []  # each fetch: its topics, its wait
    send = AIOKafkaClient.send

    async def recording(self, node_id, request, *a, **kw):
        if type(request).__name__ == "FetchRequest":
            topics_waits.append(({t[0] for t in request._topics}, request._max_wait_ms))
        return await send(self, node_id, request, *a, **kw)

    monkeypatch.setattr(AIOKafkaClient, "send", recording)

    def view_waits() -> list[int]:
        return [ms for topics, ms in topics_waits if "calf.capabilities" in topics]

    handed_back: list[tuple[object, int, int]] = []  # consumer, its wait, view fetches sent by then
    add = pacer.add

    def add_(consumer, *, short_ms: int, **kw) -> None:
        handed_back.append((consumer, short_ms, len(view_waits())))
        add(consumer, short_ms=short_ms, **kw)

    pacer.add = add_
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    router = Router(name="early", system_prompt="hold", model_client=None, kafka=KafkaSettings(broker.bootstrap))
    try:
        await broker.wait_ready()
        await router.start()
        view = router._worker.resources[CAPABILITY_VIEW_RESOURCE_KEY]
        consumer = view._table._table._consumer
        assert view.is_caught_up
        [(own_wait, caught_up_after)] = [(ms, n) for c, ms, n in handed_back if c is consumer]
        # Until caught up the view read calf.capabilities at the short wait only (was: its first fetch
        # 500 ms, which the snapshot of its end offsets waited out), then it has its own wait back.
        short = CONSUMER_TUNING["fetch_max_wait_ms"]
        assert caught_up_after and set(view_waits()[:caught_up_after]) == {short}, view_waits()
        assert own_wait == 500 and pacer.wait_ms(consumer) == 500  # not `short`'s long wait (300)

        async def fetched_again() -> None:
            while len(view_waits()) <= caught_up_after:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(fetched_again(), 10)
        assert view_waits()[caught_up_after] == 500
    finally:
        await router.stop()
        broker.stop()
