"""Which wait each fetch and each poll of a consumer asked for (arena.polling, arena/compat/table_catchup.py)."""

from __future__ import annotations


def record_waits(monkeypatch) -> list:
    """From now on, every FetchRequest any aiokafka client of this process sends, as ("fetch", client, its
    wait), and every getmany of any consumer, as ("poll", consumer, its timeout)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.client import AIOKafkaClient

    seen: list = []
    send, getmany = AIOKafkaClient.send, AIOKafkaConsumer.getmany

    async def sending(self, node_id, request, *a, **kw):
        if type(request).__name__ == "FetchRequest":
            seen.append(("fetch", self, request._max_wait_ms))
        return await send(self, node_id, request, *a, **kw)

    async def polling(self, *partitions, timeout_ms=0, max_records=None):
        seen.append(("poll", self, timeout_ms))
        return await getmany(self, *partitions, timeout_ms=timeout_ms, max_records=max_records)

    monkeypatch.setattr(AIOKafkaClient, "send", sending)
    monkeypatch.setattr(AIOKafkaConsumer, "getmany", polling)
    return seen


def waits_of(seen: list, consumer, upto: int | None = None) -> dict[str, list[int]]:
    """The fetch waits and poll timeouts of `consumer` among the first `upto` of `seen`."""
    out: dict[str, list[int]] = {"fetch": [], "poll": []}
    for kind, who, ms in seen[:upto]:
        if who is (consumer._client if kind == "fetch" else consumer):
            out[kind].append(ms)
    return out


async def next_fetch_wait(seen: list, consumer, after: int, in_flight: int | None = None, timeout_s: float = 10) -> int:
    """The wait of `consumer`'s first fetch among `seen` past its first `after` entries (waits for one).

    With `in_flight`: the first fetch built after entry `after`. A fetch the fetcher built just before
    (at the old wait `in_flight`) may still be sent after it: one such fetch is skipped, a second is not."""
    import asyncio

    async def first() -> int:
        while True:
            fetches = waits_of(seen[after:], consumer)["fetch"]
            if fetches and (fetches[0] != in_flight or len(fetches) > 1):
                return fetches[1] if fetches[0] == in_flight else fetches[0]
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(first(), timeout_s)
