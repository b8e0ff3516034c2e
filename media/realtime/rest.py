"""JSON over HTTP with a bearer secret: the plumbing shared by RealtimeClient and TurnClient.

Owns the httpx.AsyncClient, maps failures to `errors`, retries what may succeed later
(transport errors, 5xx, 425; never another 4xx) and keeps the secret out of every
message: httpx masks the Authorization header in reprs, and response bodies quoted in
errors are scrubbed in case a proxy echoes the request back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from ..backoff import Backoff
from .errors import PeerNotReady, RealtimeError, TransientError, error_from_response
from .retry import retry_attempts

__all__ = ["ApiClient", "ErrorObserver", "RestApi"]

ErrorObserver = Callable[[RealtimeError], None]
"""Sees every error the API answers (request-level and per item), e.g. to count by code."""

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
SNIPPET_CHARS = 200
REDACTED = "[redacted]"


RETRY_SAFE_CODES = frozenset({"retryable_transient_error", "temporarily_unavailable_error"})
"""5xx codes Cloudflare documents as "nothing happened, try again"."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError | PeerNotReady)


def _retryable_creation(exc: BaseException) -> bool:
    # A create that timed out or failed with internal_error may have happened: repeating it
    # could publish twice. Cloudflare asks to reconcile first, so only the provably
    # unapplied failures are retried here.
    if isinstance(exc, PeerNotReady):
        return True
    if isinstance(exc, TransientError):
        return not exc.sent or exc.error_code in RETRY_SAFE_CODES
    return False


class RestApi:
    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        timeout_s: float,
        retry: Backoff,
        transport: httpx.AsyncBaseTransport | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self._secret = secret
        self._retry = retry
        self.on_error = on_error
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        op: str,
        session_id: str | None = None,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        creates: bool = False,
        retry: bool = True,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send with retries; return the JSON object of a 2xx response ({} for no body).

        `path` is relative to the base URL; `op` names the operation in logs and errors.
        `creates` marks a request whose repetition could create something twice. `retry`
        False sends once: a request made inside a session's negotiation must not sleep while
        holding its lock; its caller's reconciler retries instead. `timeout_s` overrides the
        client's timeout for this request (a health probe wants a short one).
        """
        if not retry:
            return await self._send(method, path, op, session_id, body, params, timeout_s)

        def log_retry(exc: BaseException, retry_number: int, delay_s: float) -> None:
            log.info(
                "realtime retry op=%s session_id=%s status=%s error_code=%s retry=%d delay_s=%.3f",
                op,
                session_id,
                getattr(exc, "status", None),
                getattr(exc, "error_code", None),
                retry_number,
                delay_s,
            )

        should_retry = _retryable_creation if creates else _retryable
        async for attempt in retry_attempts(self._retry, should_retry, log_retry):
            with attempt:
                return await self._send(method, path, op, session_id, body, params, timeout_s)
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _send(
        self,
        method: str,
        path: str,
        op: str,
        session_id: str | None,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        try:
            response = await self._http.request(
                method, path, json=body, params=params, timeout=timeout
            )
        except httpx.TransportError as exc:
            log.warning(
                "realtime transport error op=%s session_id=%s error=%s",
                op,
                session_id,
                type(exc).__name__,
            )
            transient = TransientError(
                f"{op} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
            )
            transient.sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            self.observe(transient)
            raise transient from exc

        text = response.text
        payload = _json_object(text)
        error_code = payload.get("errorCode") if payload else None
        if response.is_success and not error_code:
            if payload is None and text.strip():
                raise RealtimeError(
                    f"{op} failed: HTTP {response.status_code} with a non-JSON body: "
                    f"{self._snippet(text)!r}",
                    status=response.status_code,
                )
            log.debug(
                "realtime response op=%s session_id=%s status=%d",
                op,
                session_id,
                response.status_code,
            )
            return payload or {}

        # Also a 2xx whose body carries a top-level errorCode: the request as a whole failed.
        scrubbed = self._scrub(text)
        error = error_from_response(
            op, response.status_code, _json_object(scrubbed), self._snippet(scrubbed)
        )
        log.warning(
            "realtime error op=%s session_id=%s status=%d error_code=%s",
            op,
            session_id,
            response.status_code,
            error.error_code,
        )
        self.observe(error)
        raise error

    def observe(self, error: RealtimeError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                log.exception("realtime error observer failed")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, REDACTED) if self._secret else text

    def _snippet(self, text: str) -> str:
        return " ".join(self._scrub(text).split())[:SNIPPET_CHARS]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class ApiClient:
    """Base of the API clients: each owns one `RestApi` and closes it as a context manager."""

    _api: RestApi

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.aclose()
