"""The long-running venue feeds: processes that hold a connection to the venue's streams and turn what
arrives into Redis streams and Temporal signals.

- `feeds.price_watcher` (+ `feeds.watcher_levels`): ticks in, one `price_crossed` signal per crossed
  position level out (`qtrader watcher`).
- `feeds.user_stream` (+ `feeds.user_events`, `feeds.balance_tracker`): the account's own events in,
  `exchange_event` signals to the owning position workflows out (`qtrader user-stream`).
- `feeds.market_data`: closed bars, ticks and features into Redis (`qtrader market-data`).

Each runs under the one service runner (`workers/service.py`); the model pipeline they feed lives in
`signals/`.
"""
