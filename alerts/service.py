"""The notifier process (`qtrader alerts`): stream entries and its own observations → alerts → every
target, with Prometheus metrics on ALERTS_METRICS_PORT.

One alert per event: an entry is acknowledged in the consumer group only once it was delivered (or
given up on after the last attempt), each target's success is marked per entry, so an entry resumed
after a restart goes only to the targets that had not taken it; and events told by several entries
(the fills of one liquidation order) are claimed once. Nothing in the trading path waits for any of
this: the workers write their streams whether or not the notifier runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from alerts.events import DECODERS, Alert, Kind, MalformedEvent, Severity
from alerts.messages import Scrubber, render
from alerts.metrics import AlertMetrics
from alerts.ratelimit import RateLimiter, Release
from alerts.senders import Outcome, RetryPolicy, Target, send, targets_from_settings
from alerts.sources import DailySummary, Entry, StreamReader, TaskQueueWatch
from trading.config import Settings
from workers.service import Service, run_service
from workers.temporal_client import connect

__all__ = ["AlertsConfigError", "Notifier", "run_alerts", "scrubber_for", "send_test"]

log = logging.getLogger("alerts")

ONCE_KEY = "quantum:alerts:once:{}"  # → the entry that claimed the event
SENT_KEY = "quantum:alerts:sent:{}:{}"  # entry, target → delivered
MARK_TTL_S = 7 * 24 * 3600


class AlertsConfigError(RuntimeError):
    """The notifier has nowhere to post; the message says which settings to set."""


class Stopping(Exception):
    """Told to stop in the middle of a delivery: the entry stays unacknowledged for the next start."""


def scrubber_for(settings: Settings) -> Scrubber:
    """Every credential the process knows of: these never leave it in an alert's text."""
    secrets: list[str | None] = []
    for secret in (
        settings.binance_api_key,
        settings.binance_api_secret,
        settings.alert_telegram_bot_token,
        settings.database_url,
    ):
        if secret is not None:
            secrets.append(secret.get_secret_value())
    if settings.alert_webhook_urls is not None:
        secrets += settings.alert_webhook_urls.get_secret_value().split(",")
    return Scrubber(secrets)


class _ScrubRecords(logging.Filter):
    """httpx logs every request with its full URL (at INFO): a Telegram URL carries the bot token, a
    webhook URL its credential. Every record of the `httpx` logger goes through the scrubbers of the
    notifiers in this process, whatever the logging configuration lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.scrubbers: weakref.WeakSet[Scrubber] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        scrubbers = list(self.scrubbers)
        if scrubbers:
            text = record.getMessage()
            for scrub in scrubbers:
                text = scrub(text)
            record.msg, record.args = text, None
        return True


_SCRUB_RECORDS = _ScrubRecords()


def _guard_logs(scrub: Scrubber) -> None:
    _SCRUB_RECORDS.scrubbers.add(scrub)
    logger = logging.getLogger("httpx")
    if _SCRUB_RECORDS not in logger.filters:
        logger.addFilter(_SCRUB_RECORDS)


def _label(settings: Settings) -> str:
    return f"qtrader {settings.trading_mode.value}"


class Notifier:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        *,
        targets: list[Target] | None = None,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        connect_temporal: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.targets = targets if targets is not None else targets_from_settings(settings)
        self.metrics = metrics or AlertMetrics()
        self.clock = clock
        self.scrub = scrubber_for(settings)
        _guard_logs(self.scrub)
        self.policy = RetryPolicy(
            settings.alert_max_attempts, settings.alert_retry_base_seconds, settings.alert_retry_max_seconds
        )
        self.limiter = RateLimiter(settings.alert_rate_limit_count, settings.alert_rate_limit_window_seconds)
        self.reader = StreamReader(redis)
        self.label = _label(settings)
        self.watch = (
            TaskQueueWatch(
                redis,
                self.metrics,
                address=settings.temporal_address,
                namespace=settings.temporal_namespace,
                task_queues=settings.alert_task_queues,
                stale_s=settings.alert_worker_stale_seconds,
                clock=clock,
                connect=connect_temporal or (lambda: connect(settings)),
            )
            if settings.alert_task_queues
            else None
        )
        self.summary = (
            DailySummary(
                redis,
                self.metrics,
                at=settings.alert_daily_summary_at,
                journal_url=settings.database_url,
                home=settings.qt_home,
                run_id=settings.trading_mode.value,
                capital=settings.start_equity_usdt or settings.paper_start_balance_usdt,
                clock=clock,
            )
            if settings.alert_daily_summary_at != "off"
            else None
        )
        self.http: httpx.AsyncClient | None = None
        self._stop = asyncio.Event()

    # ---- the process --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set. The loops stop by themselves, never by cancellation: a blocking stream
        read cancelled in redis-py can hang for good, so reads block for a second at most and the
        loops look at `stop` in between; a delivery stops at its next wait between attempts, leaving
        its entry unacknowledged (the next start resumes it)."""
        self._stop = stop
        async with httpx.AsyncClient(timeout=self.settings.alert_http_timeout_seconds) as http:
            self.http = http
            tasks = [asyncio.create_task(self._consume(), name="alerts-consume")]
            for name, check in (("workers", self.watch), ("summary", self.summary)):
                if check is not None:
                    tasks.append(asyncio.create_task(self._every(name, check.check), name=f"alerts-{name}"))
            log.info(
                "notifier running: %d target(s): %s",
                len(self.targets),
                ", ".join(f"{t.name} ({t.host})" for t in self.targets),
            )
            try:
                await stop.wait()
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless told to stop first (then raise Stopping)."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise Stopping

    async def _every(self, name: str, check: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            try:
                await check()
            except Exception as exc:
                self.metrics.source_errors.labels(name).inc()
                log.warning("%s check failed: %s", name, self.scrub(repr(exc)))
            with contextlib.suppress(Stopping):
                await self._pause(self.settings.alert_check_interval_seconds)

    async def _consume(self) -> None:
        backoff, pending, grouped = 0.5, True, False
        while not self._stop.is_set():
            try:
                if not grouped:
                    await self.reader.ensure_groups()
                    grouped = True
                entries = await self.reader.read(pending=pending, block_ms=1000)
                if pending and not entries:
                    pending = False  # every entry left over from before is done
                for entry in entries:
                    await self.handle(entry)
                for release in self.limiter.flush(self.clock()):
                    await self.deliver(release, None)
                backoff = 0.5
            except Stopping:
                return
            except (RedisError, OSError) as exc:
                self.metrics.source_errors.labels("redis").inc()
                log.warning("redis: %r; again in %.1f s", exc, backoff)
                with contextlib.suppress(Stopping):
                    await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                pending = True  # what was read but not acknowledged is read again

    # ---- one entry ----------------------------------------------------------------------------------
    async def handle(self, entry: Entry) -> None:
        """Decode, de-duplicate, rate-limit, deliver, acknowledge. Redis errors and Stopping leave the
        entry unacknowledged (read again); anything else wrong with one entry is logged and the entry
        acknowledged, so that one bad entry never stops the alerts behind it."""
        try:
            await self._handle(entry)
        except (Stopping, RedisError, OSError):
            raise
        except Exception as exc:
            self.metrics.malformed.labels(entry.source).inc()
            log.error("entry %s skipped: %s", entry.ref, self.scrub(repr(exc)))
            await self.reader.ack(entry)

    async def _handle(self, entry: Entry) -> None:
        try:
            alert = DECODERS[entry.source](entry.fields)
        except MalformedEvent as exc:
            self.metrics.malformed.labels(entry.source).inc()
            log.warning("unreadable entry %s: %s", entry.ref, self.scrub(str(exc)))
            await self.reader.ack(entry)
            return
        if alert is None:
            await self.reader.ack(entry)
            return
        kind = alert.kind.value
        self.metrics.raised.labels(kind).inc()
        if alert.once is not None and not await self._claim(alert.once, entry.ref):
            self.metrics.duplicates.labels(kind).inc()
            await self.reader.ack(entry)
            return
        release = self.limiter.offer(alert, self.clock())
        if release is None:
            self.metrics.suppressed.labels(kind).inc()
            log.info("held back by the rate limit: %s", self.scrub(alert.title))
        else:
            await self.deliver(release, entry.ref)
        await self.reader.ack(entry)

    async def _claim(self, once: str, ref: str) -> bool:
        """True when this entry is the first to tell the event (or is that entry, read again)."""
        key = ONCE_KEY.format(once)
        if await self.redis.set(key, ref, nx=True, ex=MARK_TTL_S):
            return True
        owner = await self.redis.get(key)
        return owner is not None and owner.decode() == ref

    async def deliver(self, release: Release, ref: str | None) -> list[Outcome | None]:
        """Send to every target (those that already took this entry are skipped: None)."""
        alert = release.alert
        text = render(
            alert, label=self.label, suppressed=release.held, suppressed_since_ms=release.held_since_ms
        )
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(self._send_one(alert, t, text, ref) for t in self.targets), return_exceptions=True
        )
        for outcome in outcomes:  # every target's attempt has ended before this one is re-raised
            if isinstance(outcome, BaseException):
                raise outcome
        self.metrics.delivery_seconds.set(time.monotonic() - started)
        return list(outcomes)  # type: ignore[arg-type]

    async def _send_one(self, alert: Alert, target: Target, text: str, ref: str | None) -> Outcome | None:
        assert self.http is not None, "deliver() runs inside run() or open_http()"
        kind = alert.kind.value
        mark = SENT_KEY.format(ref, target.name) if ref else None
        if mark is not None and await self.redis.exists(mark):
            return None
        outcome = await send(
            self.http,
            target,
            text,
            self.scrub,
            self.policy,
            on_retry=lambda: self.metrics.retried.labels(kind, target.name).inc(),
            sleep=self._pause,
        )
        if outcome.ok:
            self.metrics.sent.labels(kind, target.name).inc()
            if mark is not None:
                await self.redis.set(mark, "1", ex=MARK_TTL_S)
            log.info("alert sent kind=%s target=%s attempts=%d", kind, target.name, outcome.attempts)
        else:
            self.metrics.failed.labels(kind, target.name).inc()
            log.error(
                "alert not delivered kind=%s target=%s (%s) after %d attempt(s): %s",
                kind,
                target.name,
                target.host,
                outcome.attempts,
                outcome.error,
            )
        return outcome

    @contextlib.asynccontextmanager
    async def open_http(self) -> Any:
        """An HTTP client for `deliver` outside `run` (the `--test` message)."""
        async with httpx.AsyncClient(timeout=self.settings.alert_http_timeout_seconds) as http:
            self.http = http
            try:
                yield self
            finally:
                self.http = None


def _quiet_http_logs() -> None:
    # A line per request is noise in the notifier's log (and its URL is scrubbed anyway).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_targets(settings: Settings) -> None:
    if not settings.alert_targets_configured:
        raise AlertsConfigError(
            "no alert target: set ALERT_WEBHOOK_URLS (Slack / Discord webhooks, comma-separated) and/or "
            "ALERT_TELEGRAM_BOT_TOKEN with ALERT_TELEGRAM_CHAT_ID"
        )


async def send_test(settings: Settings) -> dict[str, Outcome | None]:
    """One test alert to every target, now (no Redis involved); the outcome per target."""
    _check_targets(settings)
    _quiet_http_logs()
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port)
    try:
        notifier = Notifier(settings, redis)
        alert = Alert(
            Kind.TEST,
            Severity.INFO,
            "Test alert: this target receives the notifier's alerts",
            at_ms=int(time.time() * 1000),
        )
        async with notifier.open_http():
            outcomes = await notifier.deliver(Release(alert), None)
        return {t.name: o for t, o in zip(notifier.targets, outcomes, strict=True)}
    finally:
        await redis.aclose()


async def run_alerts(
    settings: Settings, metrics_port: int | None, *, stop: asyncio.Event | None = None
) -> None:
    """Run until SIGTERM / SIGINT (or `stop`)."""
    _check_targets(settings)
    _quiet_http_logs()
    metrics = AlertMetrics()

    async def notify(svc: Service) -> None:
        await Notifier(settings, svc.redis, metrics=metrics).run(svc.stop)

    await run_service(
        "alerts",
        settings,
        notify,
        log=log,
        stop=stop,
        registry=metrics.registry,
        metrics_port=metrics_port,
        # Reads block for a second at a time: the socket timeout must be longer than that.
        redis={"socket_timeout": 10, "socket_connect_timeout": 3},
    )
