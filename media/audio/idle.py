"""A send track that yields nothing: parks aiortc's sender loop without polling.

An `RTCRtpSender` with no track sleeps 20 ms and looks again, forever; with this track it
waits on a future instead, so an idle or forwarding-only sender costs nothing. Replacing it
through `handover.replace_track` wakes the parked loop onto the new track.
"""

from __future__ import annotations

import asyncio

from aiortc import MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

__all__ = ["IdleTrack"]


class IdleTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._successor: asyncio.Future[MediaStreamTrack] = (
            asyncio.get_running_loop().create_future()
        )

    async def recv(self) -> Frame | Packet:
        # Parked until the sender is given a real track again (see `handover`).
        successor = await self._successor
        return await successor.recv()

    def hand_over(self, successor: MediaStreamTrack) -> None:
        if not self._successor.done():
            self._successor.set_result(successor)

    def stop(self) -> None:
        super().stop()
        if not self._successor.done():
            self._successor.cancel()
