"""`WebError`: every refusal of the web API, rendered as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import math
from collections.abc import Mapping

from aiohttp import web

__all__ = ["WebError", "error_response"]


class WebError(Exception):
    """A refusal with an HTTP status, a stable machine-readable `code` and a plain message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.close_connection = close_connection
        """Drop the keep-alive connection after answering (refusals of floods)."""
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> Mapping[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def error_response(error: WebError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status, headers=error.headers())
    if error.close_connection:
        response.force_close()
    return response
