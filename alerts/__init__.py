"""The notifier: what the system already publishes (Redis streams) and what it can be seen doing
(Temporal's task-queue pollers, the trade journal) becomes short messages posted to webhooks (Slack,
Discord) and Telegram.

- `events`: the alerts themselves, decoded from stream entries (pure);
- `messages`: alert → text → each target's JSON, with every secret scrubbed (pure);
- `ratelimit`: at most N alerts per condition and window, the rest summed up in one (pure);
- `conditions`: workers up / down from pollers, and when the daily summary is due (pure);
- `summary`: the daily summary's figures from the journal (pure);
- `senders`: HTTP posts with bounded retries and backoff;
- `sources`: Redis consumer group over the event streams, the worker watch, the daily summary;
- `service`: the process (`qtrader alerts`) and its Prometheus metrics.

The notifier is its own process: nothing in the trading path waits for it, and a slow or dead
receiver only delays alerts.
"""
