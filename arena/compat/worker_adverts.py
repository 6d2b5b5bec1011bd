"""Hold back a calfkit Worker's capability adverts until its consumers are positioned.

Symptom: calfkit 0.13 publishes a tool's advert as soon as its consumers have started, before they
resolve "latest", and an agent calls a tool the moment it sees the advert: that call is skipped and
its turn waits out its whole timeout (bench/README.md, "Findings").
Fix: Worker `after_startup` hooks run in the order registered, and the Worker registers its advert
publisher only when it starts, so a hook registered before `start()` runs first and can wait.
Can go when calfkit advertises only positioned nodes (or documents a hook that runs before adverts).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer


def advertise_when_positioned(worker, consumers: list[AIOKafkaConsumer]) -> None:
    """Register, before `worker.start()`, a start-up hook that waits until `consumers` are positioned."""
    from arena.kafka import positioned

    async def hold(_ctx) -> None:
        await positioned(list(consumers))

    worker.after_startup(hold)
