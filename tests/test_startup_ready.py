"""A router on a broker where no tools process has advertised yet: calfkit's capability view catches
up at the short wait (arena/compat/table_catchup.py), not behind its 500 ms first fetch, and once
caught up its reader is the polling policy's again at its own wait. Own broker: its calf.capabilities
must be empty."""

from __future__ import annotations

import pytest

from arena.config import CONSUMER_TUNING, KafkaSettings
from tests.support.waits import next_fetch_wait, record_waits, waits_of

pytestmark = [pytest.mark.processes, pytest.mark.asyncio]


@pytest.mark.timeout(120)
async def test_a_router_on_a_fresh_broker_catches_its_capability_view_up_at_the_short_wait(monkeypatch):
    from calfkit.models.capability import CAPABILITY_VIEW_RESOURCE_KEY

    from arena import polling
    from arena.broker import EmbeddedBroker, free_port
    from arena.router import Router

    pacer = polling.Pacer(idle_ms=300, quiet_s=0.0, startup_s=0.0)  # nothing due: long waits unless busy
    monkeypatch.setattr(polling, "PACER", pacer)
    seen = record_waits(monkeypatch)
    handed_back: list[tuple[object, int, int]] = []  # consumer, the wait it was given, len(seen) by then
    add = pacer.add

    def add_(consumer, *, short_ms: int, **kw) -> None:
        handed_back.append((consumer, short_ms, len(seen)))
        add(consumer, short_ms=short_ms, **kw)

    pacer.add = add_
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    router = Router(name="early", system_prompt="hold", model_client=None, kafka=KafkaSettings(broker.bootstrap))
    try:
        await broker.wait_ready()
        await router.start()
        view = router._worker.resources[CAPABILITY_VIEW_RESOURCE_KEY]
        consumer = view._table._table._consumer
        assert view.is_caught_up and consumer.subscription() == {"calf.capabilities"}
        short = CONSUMER_TUNING["fetch_max_wait_ms"]
        given = [(ms, n) for c, ms, n in handed_back if c is consumer]
        # The policy took it at the short wait as it started, and back at its own once it was caught up.
        assert [ms for ms, _ in given] == [short, 500], given
        caught_up = given[-1][1]
        during = waits_of(seen, consumer, caught_up)
        # Until caught up the view polled and fetched at the short wait only (was: a first fetch of
        # 500 ms, which the snapshot of its end offsets waited out, then a 200 ms poll).
        assert during["poll"] and set(during["poll"]) == {short}, during
        assert set(during["fetch"]) <= {short}, during
        assert pacer.wait_ms(consumer) == 500  # not `short`'s long wait (300)

        assert await next_fetch_wait(seen, consumer, caught_up, in_flight=short) == 500
    finally:
        await router.stop()
        broker.stop()
