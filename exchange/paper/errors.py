"""The paper exchange's answer to a bad request: Binance's error code, message and HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """Raised anywhere in the paper exchange; the server turns it into `{"code":..,"msg":..}`."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}
