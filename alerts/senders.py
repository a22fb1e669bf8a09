"""Posting one text to one target, with bounded retries and backoff.

A target is a Slack / Discord-compatible webhook (`{"text", "content"}`) or Telegram's bot API
(`POST <api>/bot<token>/sendMessage` with `{"chat_id", "text"}`). Its URL is a credential: logs and
metrics name a target only by `name` ("webhook-1", "telegram") and host.

Retried: connection errors, timeouts, 408, 425, 429 (after the receiver's Retry-After, capped) and 5xx,
up to `max_attempts` in all, waiting `base_s` · 2^(n-1) (capped at `max_s`, ±20 % jitter) between them.
Any other 4xx is final at once: a wrong URL, token or chat id does not fix itself.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from alerts.messages import Scrubber, telegram_payload, webhook_payload

__all__ = ["Outcome", "RetryPolicy", "Target", "send", "targets_from_settings"]

RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # for metrics and logs: "webhook-1", "telegram"
    url: str  # a secret: never logged
    chat_id: str | None = None  # Telegram only

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def payload(self, text: str, scrub: Scrubber) -> dict[str, str]:
        if self.chat_id is not None:
            return telegram_payload(self.chat_id, text, scrub)
        return webhook_payload(text, scrub)

    def __repr__(self) -> str:  # a target printed by mistake shows no credential
        return f"Target({self.name} at {self.host})"


def targets_from_settings(settings: object) -> list[Target]:
    out: list[Target] = []
    urls = getattr(settings, "alert_webhook_urls", None)
    if urls is not None:
        for n, url in enumerate(u for u in urls.get_secret_value().split(",") if u.strip()):
            out.append(Target(f"webhook-{n + 1}", url.strip()))
    token = getattr(settings, "alert_telegram_bot_token", None)
    chat = getattr(settings, "alert_telegram_chat_id", None)
    if token is not None and chat:
        base = getattr(settings, "alert_telegram_api_url", "https://api.telegram.org").rstrip("/")
        out.append(Target("telegram", f"{base}/bot{token.get_secret_value()}/sendMessage", chat_id=chat))
    return out


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None = None, jitter: float = 1.0) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        wait = min(self.max_s, self.base_s * 2 ** (attempt - 1)) * jitter
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return min(wait, self.max_s)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    attempts: int
    status: int | None = None
    error: str = ""  # scrubbed, for the log


def _retry_after(resp: httpx.Response) -> float | None:
    """The receiver's own wait: the Retry-After header, else Telegram's `parameters.retry_after` or
    Discord's `retry_after` in the body."""
    header = resp.headers.get("retry-after")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(body, dict):
        value = (body.get("parameters") or {}).get("retry_after", body.get("retry_after"))
        if isinstance(value, int | float):
            return max(0.0, float(value))
    return None


async def send(
    http: httpx.AsyncClient,
    target: Target,
    text: str,
    scrub: Scrubber,
    policy: RetryPolicy,
    *,
    on_retry: Callable[[], None] = lambda: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    payload = target.payload(text, scrub)
    status: int | None = None
    error = ""
    for attempt in range(1, policy.max_attempts + 1):
        retry_after: float | None = None
        try:
            resp = await http.post(target.url, json=payload)
        except httpx.InvalidURL:
            return Outcome(False, attempt, None, "invalid URL")  # a setting to fix: no retry helps
        except httpx.TimeoutException:
            error = "timed out"
        except httpx.TransportError as exc:
            # The exception's text can hold the URL (and so the credential): only its class is told.
            error = f"{type(exc).__name__}"
        else:
            status = resp.status_code
            if 200 <= status < 300:
                return Outcome(True, attempt, status)
            error = f"HTTP {status}: {scrub(resp.text[:200])}"
            if status not in RETRYABLE_STATUS and status < 500:
                return Outcome(False, attempt, status, error)
            retry_after = _retry_after(resp)
        if attempt == policy.max_attempts:
            break
        on_retry()
        await sleep(policy.delay(attempt, retry_after, jitter=0.8 + 0.4 * rand()))
    return Outcome(False, policy.max_attempts, status, error)
