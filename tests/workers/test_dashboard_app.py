"""The dashboard's web app against a real uvicorn server on a free loopback port (httpx as the client):
the page and its files under a strict Content-Security-Policy, the view as JSON and as a live stream, the
controls refused without the token (403 read-only, 401 missing or wrong) and passed to the portfolio
with it, bad bodies refused naming the field, and `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from workers.dashboard.app import STATIC_DIR, create_app
from workers.dashboard.gather import TemporalUnavailable
from workers.processes import free_port
from workers.trade_cli import CliError, UpdateRefused
from workflows.messages import FlattenRequest, KillSwitchRequest

TOKEN = "s3cret-token-for-tests"


class FakeControls:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.fail: Exception | None = None

    async def kill_switch(self, req: KillSwitchRequest) -> dict[str, Any]:
        self.calls.append(req)
        if self.fail is not None:
            raise self.fail
        return {"kill_switch": req.on}

    async def flatten(self, req: FlattenRequest) -> dict[str, Any]:
        self.calls.append(req)
        if self.fail is not None:
            raise self.fail
        return {"halted": True, "holders": ["position-a", "position-b"]}


class CountingSource:
    def __init__(self) -> None:
        self.builds = 0
        self.fail: Exception | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.builds += 1
        return {"time_ms": int(time.time() * 1000), "build": self.builds, "controls": True}


@contextlib.asynccontextmanager
async def serving(
    token: str | None, source: CountingSource | None = None, controls: FakeControls | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, CountingSource, FakeControls]]:
    source = source or CountingSource()
    controls = controls or FakeControls()
    app = create_app(source, controls, token, interval=0.2)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "dashboard app did not start"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, source, controls
    finally:
        await app.state.hub.close()  # ends open streams, as `qtrader dashboard` does on SIGTERM
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_page_and_its_files_load_nothing_from_elsewhere() -> None:
    async with serving(None) as (client, _, _):
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert '<script src="/static/dashboard.js"' in page.text
        for asset, kind in (("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "css")):
            r = await client.get(asset)
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
            assert r.headers["x-content-type-options"] == "nosniff"
    # No file of the page names another origin to load from (the SVG namespace is a name, not a load).
    for path in STATIC_DIR.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{path.name} names a host"


async def test_the_view_as_json_and_as_a_live_stream() -> None:
    async with serving(None) as (client, source, _):
        state = (await client.get("/api/state")).json()
        assert state["build"] >= 1 and state["controls"] is True

        builds: list[int] = []
        async with client.stream("GET", "/api/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    assert event == "snapshot"
                    builds.append(json.loads(line.removeprefix("data: "))["build"])
                    if len(builds) == 3:
                        break
            metrics = (await client.get("/metrics")).text
            assert "dashboard_stream_clients 1.0" in metrics
        assert builds == sorted(builds) and len(set(builds)) == 3  # a new view each interval, in order
        # The stream is gone: the hub stops building for it.
        deadline = time.monotonic() + 20
        while "dashboard_stream_clients 0.0" not in (await client.get("/metrics")).text:
            assert time.monotonic() < deadline, "the closed stream is still counted"
            await asyncio.sleep(0.1)
        settled = source.builds
        await asyncio.sleep(1.0)  # five intervals with nobody watching
        assert source.builds <= settled + 1
        assert 'dashboard_view_builds_total{outcome="ok"}' in (await client.get("/metrics")).text


async def test_a_view_that_cannot_be_built_says_why() -> None:
    source = CountingSource()
    source.fail = RuntimeError("redis is on fire")
    async with serving(None, source) as (client, _, _):
        state = (await client.get("/api/state")).json()
        assert state["error"] == "redis is on fire" and state["time_ms"] > 0
        assert 'dashboard_view_builds_total{outcome="error"} 1.0' in (await client.get("/metrics")).text


async def test_read_only_without_a_configured_token() -> None:
    async with serving(None) as (client, _, controls):
        for path, body in (("/api/kill-switch", {"on": True}), ("/api/flatten", {"reason": "x"})):
            r = await client.post(path, json=body, headers=bearer(TOKEN))
            assert r.status_code == 403, (path, r.text)
            assert "DASHBOARD_TOKEN is not set" in r.json()["error"]
        assert (await client.get("/api/auth", headers=bearer(TOKEN))).status_code == 403
        assert controls.calls == []
        assert (await client.get("/api/kill-switch")).status_code == 405  # never a GET side effect


async def test_controls_need_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(TOKEN) as (client, _, controls):
        body = {"on": True, "reason": "ops"}
        missing = await client.post("/api/kill-switch", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert "missing token" in missing.json()["error"]
        for headers in (
            bearer("wrong-token-123456"),
            bearer(TOKEN + "x"),
            {"Authorization": f"Basic {TOKEN}"},
        ):
            r = await client.post("/api/kill-switch", json=body, headers=headers)
            assert r.status_code == 401, headers
        assert (await client.get("/api/auth", headers=bearer("nope-nope-nope"))).status_code == 401
        assert controls.calls == []

        assert (await client.get("/api/auth", headers=bearer(TOKEN))).status_code == 204
        on = await client.post("/api/kill-switch", json=body, headers=bearer(TOKEN))
        assert on.status_code == 200 and on.json() == {"kill_switch": True}
        flat = await client.post("/api/flatten", json={"reason": "ops"}, headers=bearer(TOKEN))
        assert flat.status_code == 200 and flat.json()["holders"] == ["position-a", "position-b"]
        assert controls.calls == [KillSwitchRequest(on=True, reason="ops"), FlattenRequest(reason="ops")]

        metrics = (await client.get("/metrics")).text
        assert 'dashboard_control_requests_total{action="kill_switch",outcome="ok"} 1.0' in metrics
        assert 'dashboard_control_requests_total{action="kill_switch",outcome="unauthorized"} 4.0' in metrics
        assert TOKEN not in metrics
    assert TOKEN not in caplog.text  # the token is never logged, not even the wrong ones around it
    assert "wrong-token-123456" not in caplog.text


async def test_bad_bodies_are_refused_naming_the_problem() -> None:
    async with serving(TOKEN) as (client, _, controls):
        cases = [
            ("/api/kill-switch", b"{not json", "body: not a JSON object"),
            ("/api/kill-switch", b"[true]", "expected a JSON object, not list"),
            ("/api/kill-switch", b'{"reason": "x"}', "on: Field required"),
            ("/api/kill-switch", b'{"on": "maybe"}', "on: "),
            ("/api/kill-switch", b'{"on": true, "extra": 1}', "extra: "),
            ("/api/flatten", b'{"reason": ""}', "reason: "),
            ("/api/flatten", b'{"reason": "' + b"x" * 201 + b'"}', "reason: "),
        ]
        for path, raw, expected in cases:
            r = await client.post(
                path, content=raw, headers={**bearer(TOKEN), "Content-Type": "application/json"}
            )
            assert r.status_code == 400, (path, raw, r.text)
            assert expected in r.json()["error"], (raw, r.json())
        assert controls.calls == []


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (UpdateRefused("set_kill_switch refused: kill switch: nope"), 409),
        (TemporalUnavailable("Temporal at 127.0.0.1:1 is unreachable"), 503),
        (CliError("set_kill_switch failed: deadline exceeded"), 502),
    ],
)
async def test_a_failed_control_says_why(failure: Exception, status: int) -> None:
    controls = FakeControls()
    controls.fail = failure
    async with serving(TOKEN, controls=controls) as (client, _, _):
        r = await client.post("/api/kill-switch", json={"on": True}, headers=bearer(TOKEN))
        assert r.status_code == status and r.json()["error"] == str(failure)
