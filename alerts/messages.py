"""Alert → text → each target's JSON, with every secret taken out (pure: no I/O).

The text is built from values the system wrote itself, but those can quote a venue's message or a
URL, so the whole text goes through `Scrubber` before any payload is built: the configured secrets
(API key and secret, the bot token, the webhook URLs, the database URL) and anything shaped like a
credential (`key=…`, `token: …`, a Telegram token, a URL's password, a long opaque token) become
`***`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from alerts.events import Alert, Severity, utc

__all__ = [
    "DISCORD_LIMIT",
    "TELEGRAM_LIMIT",
    "Scrubber",
    "render",
    "telegram_payload",
    "truncate",
    "webhook_payload",
]

DISCORD_LIMIT = 2000  # Discord refuses `content` longer than this (Slack takes far more)
TELEGRAM_LIMIT = 4096
MASK = "***"
_MARK = {Severity.INFO: "ℹ️ INFO", Severity.WARNING: "⚠️ WARNING", Severity.CRITICAL: "🚨 CRITICAL"}

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A Telegram bot token: <bot id>:<35 characters>.
    (re.compile(r"\b\d{5,15}:[A-Za-z0-9_-]{30,}"), MASK),
    # An HTTP credential: "Bearer <token>", "Basic <base64>".
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # name=value / name: value for credential-like names (query strings, headers, JSON, logs).
    (
        re.compile(
            r"(?i)\b(api[_-]?key|apikey|api[_-]?secret|secret|token|password|passwd|pwd|signature|"
            r"listen[_-]?key|x-mbx-apikey|authorization)([\"']?\s*[:=]\s*[\"']?)"
            r"(?!\*\*\*)([^\s\"'&,;)}\]]+)"
        ),
        rf"\1\2{MASK}",
    ),
    # A password inside a URL: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:]+):([^\s/@]+)@"), rf"\1:{MASK}@"),
    # Webhook and bot URLs carry their credential in the path.
    (
        re.compile(
            r"(?i)\b(https?://(?:hooks\.slack\.com|(?:[a-z]+\.)?discord(?:app)?\.com/api/webhooks|"
            r"api\.telegram\.org/bot))[^\s\"']*"
        ),
        rf"\1/{MASK}",
    ),
    # A long opaque token (Binance API keys and listenKeys are 60-64 characters).
    (re.compile(r"\b[A-Za-z0-9]{40,}\b"), MASK),
)


class Scrubber:
    """Takes the configured secrets (any value of 6 characters or more) and the credential patterns out
    of a text. Calling it twice changes nothing more."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            values.add(secret)
            if "://" in secret:  # a URL: its path and its password are secrets on their own too
                parts = urlsplit(secret)
                if len(parts.path) > 6:
                    values.add(parts.path)
                    values.update(seg for seg in parts.path.split("/") if len(seg) >= 12)
                if parts.password:
                    values.add(parts.password)
        self._values = sorted((v for v in values if len(v) >= 6), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(
    alert: Alert,
    *,
    label: str = "",
    suppressed: int = 0,
    suppressed_since_ms: int | None = None,
) -> str:
    """The alert as a few lines of plain text: severity, where from, what; then details and time.
    `suppressed`: how many alerts of the same condition the rate limit held back before this one."""
    head = f"{_MARK[alert.severity]}"
    if label:
        head += f" · {label}"
    lines = [f"{head} · {alert.title}", *alert.details]
    if suppressed:
        since = f" since {utc(suppressed_since_ms)}" if suppressed_since_ms else ""
        lines.append(
            f"(+{suppressed} more alert{'s' if suppressed > 1 else ''} of this condition{since} held back by "
            "the rate limit; this is the latest)"
        )
    if alert.at_ms:
        lines.append(utc(alert.at_ms))
    return "\n".join(lines)


def webhook_payload(text: str, scrub: Scrubber) -> dict[str, str]:
    """Slack reads `text`, Discord reads `content`; each ignores the other's field."""
    body = truncate(scrub(text), DISCORD_LIMIT)
    return {"text": body, "content": body}


def telegram_payload(chat_id: str, text: str, scrub: Scrubber) -> dict[str, str]:
    """The body of Telegram's `sendMessage` (plain text: no parse mode to trip over)."""
    return {"chat_id": chat_id, "text": truncate(scrub(text), TELEGRAM_LIMIT)}
