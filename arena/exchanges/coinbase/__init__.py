"""Coinbase Advanced Trade: protocol parsing (protocol), WebSocket and REST clients (client), product
records with their defaults (products) and the adapter the feed drives (adapter.CoinbaseExchange).
Nothing is imported here, so the pure parts load without the network clients."""
