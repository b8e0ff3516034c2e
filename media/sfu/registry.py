"""Every live session and publication of the local SFU, and the reaper that ages them out."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from .datachannels import ChannelPublication
from .errors import ApiError
from .forwarder import Publication
from .session import SessionState, SfuSession

__all__ = ["SESSION_REUSE_S", "TRACK_IDLE_S", "Registry"]

logger = logging.getLogger(__name__)

TRACK_IDLE_S = 30.0
"""A track with no packets for this long is garbage-collected (as Cloudflare does)."""
SESSION_REUSE_S = 30.0
"""A session that lost its connection stays usable this long before it is gone (410)."""
REAP_INTERVAL_S = 1.0
NEVER_CONNECTED_S = 120.0
"""A session created but never connected is dropped after this long."""


class Registry:
    def __init__(
        self, track_idle_s: float = TRACK_IDLE_S, session_reuse_s: float = SESSION_REUSE_S
    ) -> None:
        self.track_idle_s = track_idle_s
        self.session_reuse_s = session_reuse_s
        self._sessions: dict[str, SfuSession] = {}
        self._created_at: dict[str, float] = {}
        self._publications: dict[tuple[str, str], Publication] = {}
        self._channels: dict[tuple[str, str], ChannelPublication] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def sessions(self) -> tuple[SfuSession, ...]:
        return tuple(self._sessions.values())

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="sfu-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        await asyncio.gather(*(s.close() for s in self._sessions.values()), return_exceptions=True)
        self._sessions.clear()
        self._publications.clear()
        self._channels.clear()

    def create(self) -> SfuSession:
        session_id = secrets.token_hex(16)
        session = SfuSession(session_id, self)
        self._sessions[session_id] = session
        self._created_at[session_id] = time.monotonic()
        logger.info("session created session_id=%s sessions=%d", session_id, len(self._sessions))
        return session

    def get(self, session_id: str) -> SfuSession:
        session = self._sessions.get(session_id)
        if session is None or session.state is SessionState.CLOSED:
            raise ApiError.session_gone(session_id)
        return session

    async def discard(self, session: SfuSession) -> None:
        self._sessions.pop(session.id, None)
        self._created_at.pop(session.id, None)
        await session.close()

    def lookup(self, session_id: str, track_name: str) -> Publication | None:
        return self._publications.get((session_id, track_name))

    def published(self, publication: Publication) -> None:
        self._publications[(publication.session_id, publication.track_name)] = publication

    def unpublished(self, publication: Publication) -> None:
        key = (publication.session_id, publication.track_name)
        if self._publications.get(key) is publication:
            del self._publications[key]

    def lookup_channel(self, session_id: str, name: str) -> ChannelPublication | None:
        return self._channels.get((session_id, name))

    def channel_published(self, publication: ChannelPublication) -> None:
        self._channels[(publication.session_id, publication.name)] = publication

    def channel_unpublished(self, publication: ChannelPublication) -> None:
        key = (publication.session_id, publication.name)
        if self._channels.get(key) is publication:
            del self._channels[key]

    async def reap(self) -> None:
        now = time.monotonic()
        for publication in list(self._publications.values()):
            if publication.idle_for(now) > self.track_idle_s:
                logger.info(
                    "track collected after %.0f s without packets session_id=%s track=%s",
                    self.track_idle_s,
                    publication.session_id,
                    publication.track_name,
                )
                publication.close()
                self.unpublished(publication)
        for session in list(self._sessions.values()):
            gone = (
                session.state is SessionState.CLOSED
                or (
                    session.state is SessionState.DISCONNECTED
                    and session.disconnected_at is not None
                    and now - session.disconnected_at > self.session_reuse_s
                )
                or (
                    session.state is SessionState.NEW
                    and now - self._created_at.get(session.id, now) > NEVER_CONNECTED_S
                )
            )
            if gone:
                logger.info("session gone session_id=%s state=%s", session.id, session.state.value)
                await self.discard(session)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self.reap()
            except Exception:
                logger.exception("reaper pass failed")
