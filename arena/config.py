"""Topic names, the broker address and Kafka connection options shared by every process."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

# Topics: one place, so every process agrees.
MARKET_TOPIC = "market_data.prices"
ACTIVITY_TOPIC = "arena.activity"  # every router's agent steps (calfkit publish_topic)
TRADES_TOPIC = "arena.trades"  # every fill and rejection, published by the tools process
DECISIONS_TOPIC = "arena.decisions"  # one record per router turn: outcome, error, latency
HEALTH_TOPIC = "arena.health"  # process up/down reports from a supervisor (arena demo)
LEADERBOARD_TOPIC = "arena.leaderboard"  # the tools process's leaderboard for the web page (compacted; arena.publish)


def chat_request_topic(chat_node: str) -> str:
    return f"arena.chat.{chat_node}.requests"


def chat_reply_topic(instance_id: str) -> str:
    return f"arena.chat.replies.{instance_id}"


DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")

# Latency tuning (see shared calfkit notes): a small fetch wait bounds delivery latency,
# a short session makes group joins take ~1 s instead of ~5 s. The embedded broker answers a fetch
# only when its wait runs out, so the wait is both each hop's latency and a fetch per consumer per
# wait on both sides: raise it (--fetch-wait-ms) when many agents share a small machine.
DEFAULT_FETCH_WAIT_MS = 10
CONSUMER_TUNING = {
    "fetch_max_wait_ms": DEFAULT_FETCH_WAIT_MS,
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 500,
}


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how to authenticate; passed to aiokafka and calfkit alike."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None

    def __repr__(self) -> str:  # settings end up in logs and tracebacks: never the password
        shown = (
            "<hidden>" if f.name == "sasl_password" and self.sasl_password else repr(getattr(self, f.name))
            for f in fields(self)
        )
        return f"KafkaSettings({', '.join(f'{f.name}={v}' for f, v in zip(fields(self), shown))})"

    def aiokafka_kwargs(self) -> dict:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer."""
        kw: dict = {"bootstrap_servers": self.bootstrap_servers}
        if self.security_protocol != "PLAINTEXT":
            kw["security_protocol"] = self.security_protocol
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            kw["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        return kw

    def faststream_security(self):
        """A FastStream security object for calfkit's Client (None for plaintext)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import ssl

        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        ctx = ssl.create_default_context(cafile=self.ssl_cafile) if "SSL" in self.security_protocol else None
        use_ssl = ctx is not None
        if not self.sasl_mechanism:
            return BaseSecurity(ssl_context=ctx, use_ssl=use_ssl)
        cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
            self.sasl_mechanism
        ]
        return cls(
            username=self.sasl_username or "", password=self.sasl_password or "", ssl_context=ctx, use_ssl=use_ssl
        )


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    """The broker flags every script shares."""
    g = parser.add_argument_group("Kafka connection")
    g.add_argument(
        "--bootstrap-servers",
        default=DEFAULT_BOOTSTRAP,
        help="Kafka bootstrap servers, comma separated (env KAFKA_BOOTSTRAP_SERVERS; default %(default)s)",
    )
    g.add_argument(
        "--security-protocol",
        default=os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        help="Kafka security protocol (env KAFKA_SECURITY_PROTOCOL; default %(default)s)",
    )
    g.add_argument(
        "--sasl-mechanism",
        default=os.environ.get("KAFKA_SASL_MECHANISM"),
        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        help="SASL mechanism (env KAFKA_SASL_MECHANISM)",
    )
    g.add_argument(
        "--sasl-username",
        default=os.environ.get("KAFKA_SASL_USERNAME"),
        help="SASL username (env KAFKA_SASL_USERNAME); the password is read from env KAFKA_SASL_PASSWORD only",
    )
    g.add_argument(
        "--ssl-cafile",
        default=os.environ.get("KAFKA_SSL_CAFILE"),
        help="CA bundle for SSL connections to the broker (env KAFKA_SSL_CAFILE)",
    )
    g.add_argument(
        "--fetch-wait-ms",
        type=fetch_wait_ms,
        default=os.environ.get("ARENA_FETCH_WAIT_MS", str(DEFAULT_FETCH_WAIT_MS)),  # a string: argparse checks it
        help="how long a consumer's fetch waits at the broker, 1-1000 ms: each message hop's latency, and "
        "the polling cost (the embedded broker answers only when the wait runs out); raise it with many "
        "agents on a small machine (env ARENA_FETCH_WAIT_MS; default %(default)s)",
    )


def fetch_wait_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1-1000 ms, got {value}")
    return value


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """The connection from the shared flags; applies --fetch-wait-ms to every consumer made after this."""
    CONSUMER_TUNING["fetch_max_wait_ms"] = args.fetch_wait_ms
    return KafkaSettings(
        bootstrap_servers=args.bootstrap_servers,
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        sasl_password=os.environ.get("KAFKA_SASL_PASSWORD"),
        ssl_cafile=args.ssl_cafile,
    )
