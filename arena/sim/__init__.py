"""Local stand-ins that speak the real protocols: a Coinbase-compatible market (coinbase.py)."""
