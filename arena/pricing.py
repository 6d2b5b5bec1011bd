"""What a model call cost: tokens times a price per million tokens.

A chat node prices each provider response by the first of:
  1. flags: `--price-in` / `--price-out` (USD per million input / output tokens), for any model;
  2. the published price table of genai-prices (pydantic/genai-prices, the snapshot bundled with the
     installed package: offline, no network), matched by model id and the provider's base URL;
     it prices cached input and tiers as the provider does;
  3. notional: the offline policy server's models (arena/sim/policy.py) have no real price; they are
     charged NOTIONAL_PRICE so the offline demo shows the dollar columns. Labelled "notional" wherever shown.
Otherwise the cost is unknown (None), shown as "—", never as 0.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

PER_MILLION = 1_000_000
# gpt-4o-mini's list price (USD per million input / output tokens, openai.com/api/pricing, 2025):
# a cheap real model's, so the offline demo's dollars are of a plausible size.
NOTIONAL_PRICE = (0.15, 0.60)


def _offline_models() -> re.Pattern:
    """The offline policy server's model ids: its policies, "auto" and slow-<seconds>[-<policy>]."""
    from arena.policies import POLICIES

    names = "|".join(re.escape(p) for p in (*POLICIES, "auto"))
    return re.compile(rf"^({names}|slow-[0-9.]+(-[A-Za-z_-]+)?)$")


@dataclass(frozen=True)
class Cost:
    usd: float | None  # None: no price known
    source: str  # "flags" | "table" | "notional" | ""


def per_million(tokens_in: int, tokens_out: int, price_in: float, price_out: float) -> float:
    return (tokens_in * price_in + tokens_out * price_out) / PER_MILLION


class Pricer:
    """Prices a chat node's responses (see the module docstring for the order)."""

    def __init__(
        self,
        model_id: str,
        *,
        price_in: float | None = None,
        price_out: float | None = None,
        base_url: str | None = None,
    ):
        if (price_in is None) != (price_out is None):
            raise ValueError("give both --price-in and --price-out, or neither")
        for p in (price_in, price_out):
            if p is not None and not (0 <= p < 1e6):
                raise ValueError("prices are USD per million tokens, 0 or more")
        self.model_id = model_id
        self.flags = (price_in, price_out) if price_in is not None else None
        self.base_url = base_url
        self._offline = _offline_models()

    def describe(self) -> str:
        """One line for the chat node's start-up message."""
        if self.flags:
            return f"${self.flags[0]:g} in / ${self.flags[1]:g} out per million tokens (--price-in/--price-out)"
        if self._offline.match(self.model_id):
            return f"notional ${NOTIONAL_PRICE[0]:g} in / ${NOTIONAL_PRICE[1]:g} out per million tokens (offline policy model)"
        probe = self.cost(self.model_id, 1_000_000, 1_000_000, 0)
        if probe.usd is None:
            return "unknown for this model (cost shown as —; set --price-in/--price-out)"
        return "published price (genai-prices table)"

    def cost(self, model: str, tokens_in: int, tokens_out: int, cached_in: int = 0) -> Cost:
        """Cost of one response: `tokens_in` includes `cached_in` (as OpenAI reports prompt tokens)."""
        if self.flags:  # cached input charged at the full input price: an upper bound
            return Cost(per_million(tokens_in, tokens_out, *self.flags), "flags")
        model = model or self.model_id
        if self._offline.match(model) or self._offline.match(self.model_id):
            return Cost(per_million(tokens_in, tokens_out, *NOTIONAL_PRICE), "notional")
        usd = table_price(model, tokens_in, tokens_out, cached_in, base_url=self.base_url)
        return Cost(usd, "table" if usd is not None else "")


def table_price(
    model: str, tokens_in: int, tokens_out: int, cached_in: int = 0, *, base_url: str | None = None
) -> float | None:
    """The genai-prices snapshot's price for the call, or None for a model it does not know."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # a calfkit (pydantic-ai) dependency; without it no table
        return None
    usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=cached_in or None)
    for kw in ({"provider_api_url": base_url} if base_url else {}, {}):  # the provider by URL first, then any
        try:
            return float(calc_price(usage, model, **kw).total_price)
        except LookupError:
            continue
        except Exception as exc:  # the table must never fail a model call
            log.warning("could not price model %r: %s", model, exc)
            return None
    return None
