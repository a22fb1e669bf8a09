"""The web dashboard, `qtrader dashboard`: the portfolio, positions, trades and controls in a browser.

`gather` reads the system (through `workers.snapshot`, as `qtrader status` does, plus the trade journal);
`hub` rebuilds that view once per interval for every browser watching; `app` serves the page, its JSON,
the live stream (Server-Sent Events), the token-guarded controls and `/metrics`; `server` runs it.
"""
