"""What every record on the bus must mean, not only its shape: the field types the wire models share.

Any client on the broker can write any topic, so a reader trusts nothing it did not check. The wire
models (MarketSnapshot, Decision, Fill and Rejection, the chat types, ProcessStatus) build their fields from these
types; a record that breaks one is rejected whole by `arena.kafka.decode_record` and never reaches a
prompt, a quote book, a metric, the dashboard or the viewer.

- Times carry a timezone, and none is more than MAX_FUTURE_SKEW_S ahead of the reader's clock (a time a
  forger sets far ahead would otherwise outrank every real record that follows it). Times in the past
  are fine: a replayed recording is all past.
- Prices are finite and positive; amounts finite and not negative.
- Product ids, agent names and chat node names have their patterns; texts, maps and lists are bounded.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

MAX_FUTURE_SKEW_S = 5.0  # how far ahead of the reader's clock a record's time may be (clocks differ a little)

MAX_PRODUCTS = 1000  # per snapshot (the connector subscribes in chunks of 50; ~900 is Coinbase's whole list)
MAX_CANDLES = 350  # per product and granularity (Coinbase's own limit per request)
MAX_GRANULARITIES = 8  # Coinbase has eight
MAX_TEXT = 16_000  # characters of free text: a model's answer, an error, a reason
MAX_SHORT = 200  # characters of a label: a source, a strategy, a replica, a model id
MAX_ID = 1000  # characters of an id that embeds others (a trade's call key)
MAX_SEQ = 2**63 - 1

PRODUCT_ID_RE = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,10}$")  # BTC-USD, FARTCOIN-USD, 1INCH-USDC
# Agent names become Kafka topic names (agent.<name>.private.input) and consumer group ids.
AGENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CHAT_NODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")  # a chat node name is part of its topics' names
GRANULARITY_RE = re.compile(r"^[A-Z_]{1,20}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _not_future(t: datetime) -> datetime:
    if t - utcnow() > timedelta(seconds=MAX_FUTURE_SKEW_S):
        raise ValueError(f"{t.isoformat()} is more than {MAX_FUTURE_SKEW_S:g}s in the future")
    return t


# A timezone-aware time not (much) in the future.
AwareTime = Annotated[AwareDatetime, AfterValidator(_not_future)]
Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
ProductId = Annotated[str, StringConstraints(pattern=PRODUCT_ID_RE.pattern)]
AgentName = Annotated[str, StringConstraints(pattern=AGENT_NAME_RE.pattern)]
ChatNodeName = Annotated[str, StringConstraints(pattern=CHAT_NODE_RE.pattern)]
Granularity = Annotated[str, StringConstraints(pattern=GRANULARITY_RE.pattern)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Short = Annotated[str, StringConstraints(max_length=MAX_SHORT)]
Id = Annotated[str, StringConstraints(max_length=MAX_ID)]


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to fit a Text field (what a writer does with a model's unbounded answer)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
