"""Let a websockets server answer an HTTP GET that carries a body (the market simulator's REST side).

Symptom: Coinbase answers a GET with a body, and its official SDK (coinbase-advanced-py) sends `{}` with
every one; websockets 17 refuses any request body before a handshake and hangs up without an answer.
Fix: a ServerConnection subclass (passed as `create_connection`) that holds the request head and its
Content-Length body until complete and hands websockets the head alone (its protocol internals:
`connection_made`/`data_received`/`eof_received` of the asyncio protocol).
Can go when websockets' `process_request` sees requests with a body (tests/test_compat.py says when), or
when the simulator's REST side moves to an HTTP server of its own.
"""

from __future__ import annotations

import re

from websockets.asyncio.server import ServerConnection

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*(?=\r\n)", re.IGNORECASE)


def body_tolerant_connection(max_body: int) -> type[ServerConnection]:
    """A ServerConnection class that drops a request body of up to `max_body` bytes before websockets
    parses the request; a longer one reaches websockets unchanged (and is refused there)."""

    class BodyTolerantConnection(ServerConnection):
        _held: bytearray | None = None  # None once the request has been passed on

        def connection_made(self, transport) -> None:
            self._held = bytearray()
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if self._held is None:
                return super().data_received(data)
            self._held += data
            end = self._held.find(b"\r\n\r\n")
            if end < 0 and len(self._held) < max_body:
                return  # the head is not complete yet
            head, body_len = self._held[: end + 4], 0
            match = _CONTENT_LENGTH.search(head) if end >= 0 else None
            if match and 0 < int(match[1]) <= max_body:
                body_len = int(match[1])
                if len(self._held) < end + 4 + body_len:
                    return  # the body is not complete yet
                head = head[: match.start()] + head[match.end() :]
            data = bytes(head + self._held[end + 4 + body_len :]) if body_len else bytes(self._held)
            self._held = None
            super().data_received(data)

        def eof_received(self) -> bool | None:
            if self._held:  # a request cut short: websockets judges what there is
                data, self._held = bytes(self._held), None
                super().data_received(data)
            return super().eof_received()

    return BodyTolerantConnection
