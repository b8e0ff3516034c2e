"""Errors as Cloudflare Realtime serves them: an HTTP status plus `errorCode`/`errorDescription`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLOSE_TRACK_ERROR",
    "NOT_FOUND_TRACK_ERROR",
    "ApiError",
    "ItemError",
]

NOT_FOUND_TRACK_ERROR = "not_found_track_error"
CLOSE_TRACK_ERROR = "close_track_error"


class ApiError(Exception):
    """A request-level failure; becomes the whole response."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    @classmethod
    def decoding(cls, description: str) -> ApiError:
        return cls(400, "decoding_error", description)

    @classmethod
    def unauthorized(cls, description: str = "invalid or missing bearer token") -> ApiError:
        return cls(401, "unauthorized", description)

    @classmethod
    def invalid_params(cls, description: str) -> ApiError:
        return cls(406, "invalid_params", description)

    @classmethod
    def invalid_sdp(cls, description: str) -> ApiError:
        return cls(406, "invalid_session_description", description)

    @classmethod
    def session_gone(cls, session_id: str) -> ApiError:
        return cls(410, "session_error", f"session {session_id} is closed or does not exist")

    @classmethod
    def not_connected(cls, session_id: str) -> ApiError:
        return cls(425, "session_error", f"session {session_id} peer connection is not connected")

    def to_json(self) -> dict[str, str]:
        return {"errorCode": self.code, "errorDescription": self.description}


@dataclass(frozen=True, slots=True)
class ItemError:
    """A failure of one track or datachannel inside an otherwise successful (200) response."""

    code: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {"errorCode": self.code, "errorDescription": self.description}
