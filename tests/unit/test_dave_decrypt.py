"""`DaveDecryptor` with real davey sessions: frames that race a DAVE transition.

The MLS group is built the way the voice server builds it (our fake's external sender signs
the proposals), so frames are encrypted and decrypted by davey itself; the test decides
exactly when the receiving session processes a commit.
"""

from __future__ import annotations

import asyncio
import struct

import davey
import numpy as np
import pytest

from bot.voice import VoiceCounters
from bot.voice.compat import DaveState
from bot.voice.dave_decrypt import DAVE_RETRY_MS, DaveDecryptor
from media.audio import OPUS_SILENCE_FRAME
from tests.fakes.discord.audio import decode_opus, dominant_frequency, encode_tone
from tests.fakes.discord.mls import ExternalSender, vec

CHANNEL_ID = 4242
SENDER, RECEIVER, JOINER = 1001, 1002, 1003
TONE_HZ = 1000.0
FRAMES = 12
SAMPLES_PER_FRAME = 960


class Call:
    """A sender, the receiving bot and a joiner in one DAVE call; the group at epoch 1."""

    def __init__(self) -> None:
        self._group_id = struct.pack(">Q", CHANNEL_ID)
        self._external = ExternalSender()
        self.sender = self._session(SENDER)
        self.receiver = self._session(RECEIVER)
        self.joiner = self._session(JOINER)
        self.sender.get_serialized_key_package()
        add = vec(self._external.add(self._group_id, 0, self.receiver.get_serialized_key_package()))
        result = self.sender.process_proposals(davey.ProposalsOperationType.append, add)
        assert result is not None and result.welcome is not None
        self.sender.process_commit(result.commit)
        self.receiver.process_welcome(result.welcome)
        assert self.sender.ready and self.receiver.ready

    def _session(self, user_id: int) -> davey.DaveSession:
        session = davey.DaveSession(1, user_id, CHANNEL_ID)
        session.set_external_sender(self._external.package())
        return session

    def add_joiner(self) -> bytes:
        """The joiner is added; only the sender has applied the commit so far (it is returned)."""
        epoch = self.sender.epoch
        assert epoch is not None
        proposals = vec(
            self._external.add(self._group_id, epoch, self.joiner.get_serialized_key_package())
        )
        result = self.sender.process_proposals(davey.ProposalsOperationType.append, proposals)
        # The receiver gets the same proposals and makes its own commit, which the server drops.
        self.receiver.process_proposals(davey.ProposalsOperationType.append, proposals)
        assert result is not None and result.welcome is not None
        self.sender.process_commit(result.commit)
        self.joiner.process_welcome(result.welcome)
        assert self.sender.epoch == epoch + 1
        return result.commit


class Received:
    """What the decryptor delivered, in order."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes, int]] = []

    def __call__(self, user_id: int, opus: bytes, rtp_timestamp: int) -> None:
        self.frames.append((user_id, opus, rtp_timestamp))

    @property
    def opus(self) -> list[bytes]:
        return [opus for _, opus, _ in self.frames]

    async def wait_for(self, count: int, timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.frames) < count:
                await asyncio.sleep(0.005)


@pytest.fixture
def call() -> Call:
    return Call()


@pytest.fixture
def tone() -> list[bytes]:
    return encode_tone(TONE_HZ, FRAMES)


def decryptor_for(call: Call, received: Received, counters: VoiceCounters) -> DaveDecryptor:
    return DaveDecryptor(received, counters, lambda: DaveState(call.receiver, 1))


def send(call: Call, decryptor: DaveDecryptor, tone: list[bytes], index: int) -> None:
    frame = call.sender.encrypt_opus(tone[index])
    decryptor.push(SENDER, index * SAMPLES_PER_FRAME, frame)


def assert_tone(packets: list[bytes]) -> None:
    pcm = decode_opus(packets)
    resolution_hz = 48_000 / len(pcm)
    assert abs(dominant_frequency(pcm) - TONE_HZ) <= resolution_hz
    assert float(np.sqrt(np.mean(pcm**2))) > 0.1  # the tone's level, not near-silence


@pytest.mark.timeout(10)
async def test_a_held_frame_is_retried_before_a_later_frame_decrypts(call, tone):
    """The race of issue 10: frame 3 overtakes the commit, frame 4 comes after it, before the
    retry timer fires. Frame 3 must be delivered, not given up."""
    received, counters = Received(), VoiceCounters()
    decryptor = decryptor_for(call, received, counters)
    for index in range(3):
        send(call, decryptor, tone, index)
    assert received.opus == tone[:3]

    commit = call.add_joiner()
    send(call, decryptor, tone, 3)  # encrypted with the new epoch's key: early for us
    assert len(received.frames) == 3 and decryptor.held == 1
    call.receiver.process_commit(commit)  # the transition reaches us over the websocket
    for index in range(4, FRAMES):
        send(call, decryptor, tone, index)  # no await in between: the retry timer cannot run

    assert received.opus == tone, "a frame that would decrypt was not delivered as sent"
    assert [ts for _, _, ts in received.frames] == [i * SAMPLES_PER_FRAME for i in range(FRAMES)]
    assert counters.dave_failures == 0
    assert counters.dave_held == 1 and counters.dave_late_decrypted == 1
    assert decryptor.held == 0
    assert_tone(received.opus[3:5])  # the held frame and the one after it
    assert_tone(received.opus)


@pytest.mark.timeout(10)
async def test_a_held_frame_decrypts_on_a_retry_once_the_commit_arrives(call, tone):
    received, counters = Received(), VoiceCounters()
    decryptor = decryptor_for(call, received, counters)
    send(call, decryptor, tone, 0)
    commit = call.add_joiner()
    send(call, decryptor, tone, 1)
    send(call, decryptor, tone, 2)  # queued behind frame 1, in order
    assert decryptor.held == 2 and len(received.frames) == 1

    call.receiver.process_commit(commit)
    await received.wait_for(3)

    assert received.opus == tone[:3]
    assert counters.dave_failures == 0
    assert counters.dave_held == 2 and counters.dave_late_decrypted == 2
    assert_tone(received.opus)


@pytest.mark.timeout(10)
async def test_a_tampered_frame_becomes_counted_silence_once_a_later_frame_decrypts(call, tone):
    received, counters = Received(), VoiceCounters()
    decryptor = decryptor_for(call, received, counters)
    send(call, decryptor, tone, 0)
    tampered = bytearray(call.sender.encrypt_opus(tone[1]))
    tampered[1] ^= 0xFF  # inside the ciphertext; the DAVE trailer stays intact
    decryptor.push(SENDER, SAMPLES_PER_FRAME, bytes(tampered))
    assert decryptor.held == 1
    send(call, decryptor, tone, 2)

    assert received.opus == [tone[0], OPUS_SILENCE_FRAME, tone[2]]
    assert counters.dave_failures == 1 and counters.dave_late_decrypted == 0
    assert decryptor.held == 0


@pytest.mark.timeout(10)
async def test_an_early_frame_whose_commit_never_comes_is_given_up_after_the_hold(call, tone):
    received, counters = Received(), VoiceCounters()
    decryptor = decryptor_for(call, received, counters)
    call.add_joiner()  # the receiver never gets this commit
    loop = asyncio.get_running_loop()
    pushed_at = loop.time()
    send(call, decryptor, tone, 0)

    await received.wait_for(1)

    assert loop.time() - pushed_at >= DAVE_RETRY_MS / 1000 * 0.9  # held, not dropped at once
    assert received.opus == [OPUS_SILENCE_FRAME]
    assert counters.dave_failures == 1 and decryptor.held == 0


@pytest.mark.timeout(10)
async def test_without_a_ready_session_plain_opus_passes_and_dave_frames_become_silence(tone):
    """Also: the silence frame passes through whatever the state."""
    received, counters = Received(), VoiceCounters()
    ready_elsewhere = Call()
    dave_frame = ready_elsewhere.sender.encrypt_opus(tone[1])
    not_ready = davey.DaveSession(1, RECEIVER, CHANNEL_ID)
    decryptor = DaveDecryptor(received, counters, lambda: DaveState(not_ready, 1))
    decryptor.push(SENDER, 0, tone[0])
    decryptor.push(SENDER, SAMPLES_PER_FRAME, dave_frame)
    decryptor.push(SENDER, 2 * SAMPLES_PER_FRAME, OPUS_SILENCE_FRAME)

    assert received.opus == [tone[0], OPUS_SILENCE_FRAME, OPUS_SILENCE_FRAME]
    assert counters.dave_not_ready == 1 and counters.silence_frames == 1
    assert counters.dave_failures == 0 and decryptor.held == 0
