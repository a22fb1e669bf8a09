"""Posting to a local receiver: the webhook and Telegram shapes, bounded retries with backoff, what is
final at once, the receiver's own Retry-After, and no credential in anything the sender says."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from alerts.messages import Scrubber
from alerts.senders import RetryPolicy, Target, send, targets_from_settings
from tests.alerts.conftest import CHAT_ID, TOKEN, Receiver
from workers.processes import free_port

FAST = RetryPolicy(max_attempts=4, base_s=0.01, max_s=0.05)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _send(target: Target, text: str = "hello", policy: RetryPolicy = FAST, **kw: object):
    retries: list[int] = []
    async with httpx.AsyncClient(timeout=5) as http:
        out = await send(
            http, target, text, Scrubber([TOKEN]), policy, on_retry=lambda: retries.append(1), **kw
        )  # type: ignore[arg-type]
    return out, len(retries)


async def test_webhook_gets_text_and_content(receiver: Receiver) -> None:
    out, retries = await _send(Target("webhook-1", f"{receiver.url}/hook"), "disk full")
    assert out.ok and out.attempts == 1 and retries == 0
    (req,) = receiver.requests
    assert req.path == "/hook" and req.body == {"text": "disk full", "content": "disk full"}
    assert req.headers["Content-Type"] == "application/json"


async def test_telegram_shape(receiver: Receiver) -> None:
    settings = type(
        "S",
        (),
        {
            "alert_webhook_urls": None,
            "alert_telegram_bot_token": SecretStr(TOKEN),
            "alert_telegram_chat_id": CHAT_ID,
            "alert_telegram_api_url": receiver.url,
        },
    )()
    (target,) = targets_from_settings(settings)
    assert target.name == "telegram" and TOKEN not in repr(target)
    out, _ = await _send(target, "liquidated")
    assert out.ok
    (req,) = receiver.requests
    assert req.path == f"/bot{TOKEN}/sendMessage"
    assert req.body == {"chat_id": CHAT_ID, "text": "liquidated"}


async def test_failures_are_retried_with_backoff_then_delivered(receiver: Receiver) -> None:
    receiver.set(fail_first=2, fail_status=503)
    sleeps = Sleeps()
    out, retries = await _send(Target("webhook-1", f"{receiver.url}/h"), sleep=sleeps, rand=lambda: 0.5)
    assert out.ok and out.attempts == 3 and retries == 2
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert sleeps.waits == [0.01, 0.02]  # doubling (jitter at its middle)


async def test_retries_are_bounded(receiver: Receiver) -> None:
    receiver.set(fail_first=-1, fail_status=500)
    out, retries = await _send(Target("webhook-1", f"{receiver.url}/h"))
    assert not out.ok and out.attempts == FAST.max_attempts and retries == FAST.max_attempts - 1
    assert len(receiver.requests) == FAST.max_attempts
    assert out.error.startswith("HTTP 500")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_a_refusal_is_final_at_once(receiver: Receiver, status: int) -> None:
    receiver.set(fail_first=-1, fail_status=status)
    out, retries = await _send(Target("webhook-1", f"{receiver.url}/h"))
    assert not out.ok and out.attempts == 1 and retries == 0 and len(receiver.requests) == 1


async def test_429_waits_the_receivers_retry_after(receiver: Receiver) -> None:
    receiver.set(fail_first=1, fail_status=429, retry_after="0.04")
    sleeps = Sleeps()
    out, _ = await _send(Target("webhook-1", f"{receiver.url}/h"), sleep=sleeps, rand=lambda: 0.5)
    assert out.ok and out.attempts == 2 and sleeps.waits == [0.04]  # longer than its own 0.01


async def test_telegram_retry_after_in_the_body(receiver: Receiver) -> None:
    receiver.set(
        fail_first=1,
        fail_status=429,
        fail_body=b'{"ok":false,"error_code":429,"parameters":{"retry_after":0.03}}',
    )
    sleeps = Sleeps()
    out, _ = await _send(
        Target("telegram", f"{receiver.url}/bot{TOKEN}/sendMessage", chat_id="1"), sleep=sleeps
    )
    assert out.ok and sleeps.waits == [0.03]


async def test_an_unreachable_receiver_is_retried_and_its_url_never_told() -> None:
    url = f"http://127.0.0.1:{free_port()}/bot{TOKEN}/sendMessage"  # nobody listens there
    out, retries = await _send(Target("telegram", url, chat_id="1"))
    assert not out.ok and out.attempts == FAST.max_attempts and retries == FAST.max_attempts - 1
    assert out.status is None and TOKEN not in out.error and "127.0.0.1" not in out.error


async def test_the_text_is_scrubbed_before_it_leaves(receiver: Receiver) -> None:
    out, _ = await _send(
        Target("webhook-1", f"{receiver.url}/h"), f"failed: bot{TOKEN}/sendMessage token={TOKEN}"
    )
    assert out.ok
    (req,) = receiver.requests
    assert TOKEN not in req.raw and "***" in req.body["text"]
