"""The user-data stream's listen key: one at a time, valid for an hour after it was created or last
kept alive; when it expires, the stream is told (listenKeyExpired)."""

from __future__ import annotations

from typing import Any

from exchange.paper.errors import ApiError
from exchange.paper.state import EngineState, _b62

LISTEN_KEY_TTL_MS = 60 * 60 * 1000


class ListenKeysMixin(EngineState):
    """The /fapi/v1/listenKey endpoints and the expiry of the key."""

    def new_listen_key(self) -> dict[str, Any]:
        now = self.wall_ms()
        if self.listen_key is None or now >= self.listen_key_expiry:
            if self.listen_key is not None:
                self._expire_key(now)
            self.listen_key = _b62(f"{self.config.seed}:lk:{self._next('listen')}", 64)
        self.listen_key_expiry = now + LISTEN_KEY_TTL_MS
        self._mark_kv("listen_key")
        self._commit()
        return {"listenKey": self.listen_key}

    def _active_key(self, p: dict[str, str]) -> str:
        key = p.get("listenKey") or self.listen_key
        if self.listen_key is None or key != self.listen_key or self.wall_ms() >= self.listen_key_expiry:
            raise ApiError(-1125, "This listenKey does not exist.")
        return key

    def keepalive_listen_key(self, p: dict[str, str]) -> dict[str, Any]:
        key = self._active_key(p)
        self.listen_key_expiry = self.wall_ms() + LISTEN_KEY_TTL_MS
        self._mark_kv("listen_key")
        self._commit()
        return {"listenKey": key}

    def close_listen_key(self, p: dict[str, str]) -> dict[str, Any]:
        self._active_key(p)
        self.listen_key = None
        self.listen_key_expiry = 0
        self._mark_kv("listen_key")
        self._commit()
        return {}

    def listen_key_valid(self, key: str) -> bool:
        return key == self.listen_key and self.wall_ms() < self.listen_key_expiry

    def _expire_key(self, now: int) -> None:
        if self.listen_key is not None:
            self._user({"e": "listenKeyExpired", "E": now, "listenKey": self.listen_key})
        self.listen_key = None
        self.listen_key_expiry = 0
        self._mark_kv("listen_key")

    def expire_listen_keys(self) -> None:
        self._expire_key(self.wall_ms())
        self._commit()
