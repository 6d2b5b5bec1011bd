"""Shorten the long-poll of a calfkit Client's reply inbox.

Symptom: calfkit 0.13's Client reads its reply inbox with faststream's default fetch wait (500 ms),
paid on every run step of an agent turn; it has no setting for it, and putting fetch_max_wait_ms in the
connection profile breaks its ktables readers.
Fix: set it on the inbox subscriber's private `_connection_args` (faststream 0.7.5) before the broker
starts.
Can go when calfkit's Client takes consumer options for its inbox.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def tune_client_inbox(client: Any, fetch_max_wait_ms: int) -> bool:
    """Set the fetch wait of `client`'s inbox subscriber; False (and a warning) if it is not found."""
    for sub in client.broker.subscribers:
        if client.inbox_topic in getattr(sub, "topics", ()):
            sub._connection_args["fetch_max_wait_ms"] = fetch_max_wait_ms
            return True
    log.warning("calfkit client inbox subscriber not found; replies keep the default fetch wait")
    return False
