"""A fake human in a voice call: its own DAVE client (a davey session) and an RTP sender.

It answers the coordinator the way discord.py 2.7.1's voice websocket handlers do (commit on
proposals, op 23 after a commit or welcome, op 31 and a fresh key package when one fails), but
in-process, so the test controls exactly what it says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import davey

from .state import FakeUser

if TYPE_CHECKING:
    from .voice_call import VoiceCall

__all__ = ["FakeVoiceUser"]

_log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz
FRAME_INTERVAL_S = 0.02
OPUS_SILENCE = b"\xf8\xff\xfe"


class FakeVoiceUser:
    """One fake user connected to one call. Create through `FakeDiscord.user_joins_voice`."""

    def __init__(self, user: FakeUser, ssrc: int, call: VoiceCall) -> None:
        self.user = user
        self.ssrc = ssrc
        self.call = call
        self.protocol_version = call.dave.protocol_version
        self.dave_session: davey.DaveSession | None = None
        self.speaking = False
        self.sequence = 0
        self.timestamp = 0
        self._pending_transitions: dict[int, int] = {}

    @property
    def user_id(self) -> int:
        return self.user.id

    @property
    def dave_ready(self) -> bool:
        return self.dave_session is not None and self.dave_session.ready

    def start_dave(self) -> None:
        """Join the call's MLS group the way a client does right after SESSION_DESCRIPTION."""
        self.dave_session = davey.DaveSession(1, self.user_id, self.call.channel_id)
        self.call.dave.key_package(self, self.dave_session.get_serialized_key_package())

    # -- media -----------------------------------------------------------------------------

    def dave_encrypt(self, opus: bytes) -> bytes:
        """The DAVE frame for `opus` (or `opus` itself while DAVE is off or not ready)."""
        if self.protocol_version > 0 and self.dave_ready:
            assert self.dave_session is not None
            return self.dave_session.encrypt_opus(opus)
        return opus

    def dave_decrypt(self, sender_id: int, frame: bytes) -> bytes:
        """Raises ValueError (davey's) if this user cannot decrypt `frame`."""
        if self.dave_session is None:
            raise ValueError("no DAVE session")
        return self.dave_session.decrypt(sender_id, davey.MediaType.audio, frame)

    def send_opus(self, opus: bytes, *, samples: int = SAMPLES_PER_FRAME) -> None:
        """Send one Opus packet to every bot in the call, DAVE-encrypted when DAVE is on."""
        self.send_frame(self.dave_encrypt(opus), samples=samples)

    def send_frame(self, frame: bytes, *, samples: int = SAMPLES_PER_FRAME) -> None:
        """Send `frame` as the RTP payload as is (e.g. a tampered DAVE frame)."""
        if not self.speaking:
            self.set_speaking(True)
        self.call.send_media(self, frame, self.sequence, self.timestamp)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFF_FFFF

    def send_raw(self, packet: bytes) -> None:
        """Send arbitrary bytes to every bot's UDP socket (no RTP, no encryption)."""
        self.call.send_raw(packet)

    def set_speaking(self, speaking: bool) -> None:
        """Tell the bots (op 5) that this user's SSRC is (not) transmitting."""
        self.speaking = speaking
        self.call.announce_speaking(self)

    async def play(self, frames: Iterable[bytes]) -> None:
        """Send Opus packets paced at 20 ms from a wall-clock origin, as a client would."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, opus in enumerate(frames):
            delay = start + index * FRAME_INTERVAL_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_opus(opus)

    # -- DaveParticipant: what the voice server tells this client --------------------------

    def send_external_sender(self, package: bytes) -> None:
        if self.dave_session is None:
            self.start_dave()
        assert self.dave_session is not None
        self.dave_session.set_external_sender(package)

    def send_proposals(self, proposals: bytes) -> None:
        assert self.dave_session is not None
        result = self.dave_session.process_proposals(davey.ProposalsOperationType.append, proposals)
        if result is not None:
            self.call.dave.commit_welcome(self, result.commit + (result.welcome or b""))

    def send_announce_commit(self, transition_id: int, commit: bytes) -> None:
        assert self.dave_session is not None
        self._apply(transition_id, self.dave_session.process_commit, commit)

    def send_welcome(self, transition_id: int, welcome: bytes) -> None:
        assert self.dave_session is not None
        self._apply(transition_id, self.dave_session.process_welcome, welcome)

    def send_prepare_transition(self, transition_id: int, protocol_version: int) -> None:
        self._pending_transitions[transition_id] = protocol_version
        if protocol_version == 0 and self.dave_session is not None:
            self.dave_session.set_passthrough_mode(True, 120)
        self.call.dave.transition_ready(self, transition_id)

    def send_execute_transition(self, transition_id: int) -> None:
        if transition_id in self._pending_transitions:
            self.protocol_version = self._pending_transitions.pop(transition_id)

    def send_prepare_epoch(self, epoch: int, protocol_version: int) -> None:
        if epoch != 1:
            return
        self.protocol_version = protocol_version
        if self.dave_session is None:
            self.start_dave()
            return
        self.dave_session.reinit(protocol_version, self.user_id, self.call.channel_id)
        self.call.dave.key_package(self, self.dave_session.get_serialized_key_package())

    def _apply(self, transition_id: int, process: Callable[[bytes], None], message: bytes) -> None:
        assert self.dave_session is not None
        try:
            process(message)
        except ValueError:
            _log.warning(
                "fake user %s could not process transition %d", self.user_id, transition_id
            )
            self.call.dave.invalid_commit_welcome(self, transition_id)
            self.dave_session.reinit(1, self.user_id, self.call.channel_id)
            self.call.dave.key_package(self, self.dave_session.get_serialized_key_package())
            return
        self._pending_transitions[transition_id] = self.protocol_version
        self.call.dave.transition_ready(self, transition_id)

    def __repr__(self) -> str:
        return f"<FakeVoiceUser {self.user.username} ssrc={self.ssrc}>"
