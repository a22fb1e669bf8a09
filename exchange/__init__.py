"""Binance USDⓈ-M: the client (`exchange.client`), its error classes by what the caller should do
(`exchange.errors`), request signing (`exchange.signing`), and under `exchange.paper` the
Binance-compatible paper exchange.

Nothing is imported here: the paper exchange, started as its own process in every test and stack,
needs none of the client (importing it cost each start 0.3 s)."""
