"""A send track that never yields: parks aiortc's sender loop without polling.

An `RTCRtpSender` with no track sleeps 20 ms and looks again, forever; with this track it
waits on a future instead, so an idle or forwarding-only sender costs nothing.
"""

from __future__ import annotations

import asyncio

from aiortc import MediaStreamTrack

__all__ = ["IdleTrack"]


class IdleTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> None:  # type: ignore[override]
        await self._never
        raise AssertionError("unreachable")

    def stop(self) -> None:
        super().stop()
        if not self._never.done():
            self._never.cancel()
