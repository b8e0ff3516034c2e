"""Errors of the Cloudflare Realtime API as the clients raise them.

Cloudflare reports a failed request as `{"errorCode", "errorDescription"}` with an HTTP
status; the status decides the class (the same `session_error` code means "gone" with 410
and "not connected yet" with 425). Failed items inside a successful response are values,
not raised: see `RealtimeItemError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CLOSE_TRACK_ERROR",
    "EMPTY_TRACK_ERROR",
    "NOT_FOUND_TRACK_ERROR",
    "InvalidParams",
    "PeerNotReady",
    "RealtimeError",
    "RealtimeItemError",
    "SessionGone",
    "TransientError",
    "Unauthorized",
    "error_from_response",
]

NOT_FOUND_TRACK_ERROR = "not_found_track_error"
EMPTY_TRACK_ERROR = "empty_track_error"
CLOSE_TRACK_ERROR = "close_track_error"


class RealtimeError(Exception):
    """A request to the Realtime API failed.

    `status` is None when no HTTP response arrived (transport error) and for item errors.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.error_description = error_description


class Unauthorized(RealtimeError):
    """401: the app secret (or TURN key token) was not accepted."""


class InvalidParams(RealtimeError):
    """406: `invalid_params`, or `invalid_session_description` (bad SDP, wrong offer/answer
    order, or a negotiation overlapping another on the same session)."""


class SessionGone(RealtimeError):
    """410: the session expired or was closed; retrying it cannot help, rebuild it."""


class PeerNotReady(RealtimeError):
    """425: the session's peer connection is not connected yet; retried with backoff."""


class TransientError(RealtimeError):
    """5xx or a transport failure (no response); retried with backoff.

    `sent` is False when the request provably never reached the server (the connection
    could not be made): only then is it safe to repeat a request that creates something.
    """

    sent: bool = True


class RealtimeItemError(RealtimeError):
    """One item of an otherwise successful (200) response failed, e.g. `not_found_track_error`
    when the publisher is not sending yet. Carried in results, raise it if you must."""

    def __init__(self, error_code: str, error_description: str = "") -> None:
        super().__init__(
            f"{error_code}: {error_description}" if error_description else error_code,
            error_code=error_code,
            error_description=error_description,
        )

    # Results holding an item error are frozen dataclasses compared by value.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RealtimeItemError):
            return NotImplemented
        return (self.error_code, self.error_description) == (
            other.error_code,
            other.error_description,
        )

    def __hash__(self) -> int:
        return hash((self.error_code, self.error_description))

    def __repr__(self) -> str:
        return f"RealtimeItemError({self.error_code!r}, {self.error_description!r})"

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RealtimeItemError | None:
        code = item.get("errorCode")
        if not isinstance(code, str) or not code:
            return None
        description = item.get("errorDescription")
        return cls(code, description if isinstance(description, str) else "")

    def to_json(self) -> dict[str, str]:
        return {
            "errorCode": self.error_code or "",
            "errorDescription": self.error_description or "",
        }


_BY_STATUS: dict[int, type[RealtimeError]] = {
    401: Unauthorized,
    406: InvalidParams,
    410: SessionGone,
    425: PeerNotReady,
}


def error_from_response(
    op: str, status: int, payload: Mapping[str, Any] | None, body_snippet: str
) -> RealtimeError:
    """The exception for a response that failed as a whole.

    `payload` is the decoded JSON object, or None when the body was not JSON (a proxy's
    HTML page, say); then the message quotes `body_snippet`, which the caller has already
    shortened and scrubbed of secrets.
    """
    cls = _BY_STATUS.get(status, TransientError if status >= 500 else RealtimeError)
    if payload is None:
        return cls(f"{op} failed: HTTP {status}, non-JSON body: {body_snippet!r}", status=status)
    code = payload.get("errorCode")
    description = payload.get("errorDescription")
    code = code if isinstance(code, str) and code else None
    description = description if isinstance(description, str) else None
    return cls(
        f"{op} failed: HTTP {status} {code or '(no errorCode)'}: {description or body_snippet}",
        status=status,
        error_code=code,
        error_description=description,
    )
