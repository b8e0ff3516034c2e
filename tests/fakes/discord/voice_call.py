"""Everyone connected to one voice channel's media: bot voice sessions and fake users."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .dave import DaveCoordinator
from .rtp import RtpPacket, audio_level_extension
from .voice_user import OPUS_SILENCE, FakeVoiceUser

if TYPE_CHECKING:
    from .voice_session import BotVoiceSession

__all__ = ["VoiceCall"]

_log = logging.getLogger(__name__)


class VoiceCall:
    """Relays what Discord's SFU relays: who is here (op 11/13), who speaks with which SSRC
    (op 5) and the fake users' RTP to every bot. Bots' media is received by the bot's session
    and decrypted with a fake user's DAVE session, as a listening client would."""

    def __init__(self, guild_id: int, channel_id: int, dave: DaveCoordinator) -> None:
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.dave = dave
        self.bots: dict[int, BotVoiceSession] = {}
        self.users: dict[int, FakeVoiceUser] = {}
        # Real clients attach an audio-level header extension; voice_recv must skip it.
        self.rtp_extension = True

    @property
    def user_ids(self) -> set[int]:
        return set(self.bots) | set(self.users)

    def add_bot(self, session: BotVoiceSession) -> None:
        others = sorted(self.user_ids - {session.user_id})
        self.bots[session.user_id] = session
        for bot in self.bots.values():
            if bot is not session:
                bot.send_clients_connect([session.user_id])
        if others:
            session.send_clients_connect(others)
        for user in self.users.values():
            if user.speaking:
                session.send_speaking(user.user_id, user.ssrc, speaking=True)
        self.dave.joined(session)

    def remove_bot(self, session: BotVoiceSession) -> None:
        if self.bots.get(session.user_id) is not session:
            return
        del self.bots[session.user_id]
        for bot in self.bots.values():
            bot.send_client_disconnect(session.user_id)
        self.dave.left(session)

    def add_user(self, user: FakeVoiceUser) -> None:
        self.users[user.user_id] = user
        for bot in self.bots.values():
            bot.send_clients_connect([user.user_id])
        self.dave.joined(user)
        if self.dave.protocol_version > 0:
            user.start_dave()

    def remove_user(self, user: FakeVoiceUser) -> None:
        if self.users.get(user.user_id) is not user:
            return
        del self.users[user.user_id]
        for bot in self.bots.values():
            bot.send_client_disconnect(user.user_id)
        self.dave.left(user)

    def announce_speaking(self, user: FakeVoiceUser) -> None:
        for bot in self.bots.values():
            bot.send_speaking(user.user_id, user.ssrc, speaking=user.speaking)

    def send_media(self, user: FakeVoiceUser, frame: bytes, sequence: int, timestamp: int) -> None:
        extension = None
        if self.rtp_extension:
            extension = audio_level_extension(voice=frame != OPUS_SILENCE)
        packet = RtpPacket(sequence, timestamp, user.ssrc, frame, extension=extension)
        for bot in self.bots.values():
            bot.send_rtp(packet)

    def send_raw(self, data: bytes) -> None:
        for bot in self.bots.values():
            bot.send_udp(data)

    def listener_for(self, sender_id: int) -> FakeVoiceUser | None:
        """A fake user whose DAVE session can decrypt `sender_id`'s frames, if any."""
        for user in self.users.values():
            session = user.dave_session
            if session is not None and session.ready and str(sender_id) in session.get_user_ids():
                return user
        return None
