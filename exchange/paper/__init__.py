"""Binance USDⓈ-M compatible paper exchange: `python -m exchange.paper` (see __main__.py)."""
