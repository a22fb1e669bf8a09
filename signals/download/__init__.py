"""`qtrader data download`: Binance USDⓈ-M klines, mark-price klines and funding rates from Binance's
public data archive (data.binance.vision: monthly and daily zip files, each checked against its
`.CHECKSUM`) and, for the days the archive does not hold yet, the venue's REST endpoints; written in
the format `signals.data` reads.

Modules: `layout` (kinds, timeframes, symbols, the archive's file names and which pieces a range
needs), `fetch` (HTTP with retries, checksum verification, the cache of verified zips), `convert`
(archive CSV → rows, the output files written atomically), `rest` (the REST tail), `job` (one
symbol and kind: plan, fetch, merge, write, resume), `cli` / `command` (the command line).
"""
