"""Room -> Discord through the send path as Discord hears it: real discord.py 2.7.1 against the
fake Discord (DAVE on), real bridges on the local SFU, plain aiortc participants in the room.

A lone room speaker's Opus reaches Discord byte for byte (no decode, no encode); a second
speaker makes the bridge mix and encode, and leaving makes it pass through again, with
Discord's sequence and timestamps running on across both seams and the tone intact; when the
room goes quiet the bot sends a few silence frames, turns SPEAKING off and sends nothing, and
when the room speaks again its first packet carries a timestamp that counts the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bot.voice import VoiceLink
from media.audio import FRAME_SAMPLES, OPUS_SILENCE_FRAME
from media.bridge import Bridge
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory, MemberKind, TrackInfo
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.audio import decode_opus, dominant_frequency, load_libopus
from tests.fakes.discord.voice_session import BotVoiceSession
from tests.integration.test_voice import ROOM, bridged, no_leaks  # noqa: F401
from tests.support import opus_source
from tests.support.rtc import Api, Client
from tests.support.waiting import wait_until

TIME_BASE = fractions.Fraction(1, 48_000)
TONE_HZ = 1000.0
OTHER_HZ = 1500.0


@pytest.fixture
async def realtime(sfu) -> AsyncIterator[RealtimeClient]:
    async with RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as client:
        yield client


@pytest.fixture
def directory() -> InMemoryDirectory:
    return InMemoryDirectory()


class GatedReplayTrack(MediaStreamTrack):
    """Pre-encoded packets paced at 20 ms while `talking` is set; nothing while it is clear
    (a muted or DTX sender). RTP timestamps follow the wall clock, so a pause keeps its time."""

    kind = "audio"

    def __init__(self, packets: Sequence[bytes]) -> None:
        super().__init__()
        self.packets = list(packets)
        self.talking = asyncio.Event()
        self.talking.set()
        self._slot = 0
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await self.talking.wait()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._slot = max(self._slot + 1, int((now - self._start) / 0.020))
        wait = self._start + self._slot * 0.020 - now
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self.packets[self._sent % len(self.packets)])
        packet.pts = self._slot * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        self._sent += 1
        return packet


@contextlib.asynccontextmanager
async def speaker(
    api: Api, directory: InMemoryDirectory, member: str, frequency_hz: float
) -> AsyncIterator[GatedReplayTrack]:
    """A room member publishing a tone (aiortc's stereo Opus) as "mic"."""
    client = Client(api)
    track = GatedReplayTrack(opus_source.encode_tone(frequency_hz, 50))
    await client.open()
    await client.push(track, "mic")
    await directory.join(ROOM, member, MemberKind.WEB, member)
    await directory.publish(ROOM, member, TrackInfo(client.session_id, "mic", member))
    try:
        yield track
    finally:
        await client.close()
        await directory.leave(ROOM, member)


@dataclass(frozen=True)
class Heard:
    sequence: int
    timestamp: int
    opus: bytes
    at: float  # when the fake got it (monotonic)


class DiscordEar:
    """Everything the bot sends, DAVE and transport peeled, with arrival times."""

    def __init__(self, session: BotVoiceSession) -> None:
        self.session = session
        self.heard: list[Heard] = []
        session.drain_frames()
        self._task = asyncio.create_task(self._listen(), name="discord-ear")

    async def _listen(self) -> None:
        while True:
            frame = await self.session.frames.get()
            assert frame.error is None and frame.opus is not None, frame.error
            self.heard.append(Heard(frame.sequence, frame.timestamp, frame.opus, time.monotonic()))

    def voiced_since(self, start: int) -> list[Heard]:
        return [h for h in self.heard[start:] if h.opus != OPUS_SILENCE_FRAME]

    async def wait_voiced(self, start: int, count: int, timeout: float = 10.0) -> list[Heard]:
        await wait_until(
            lambda: len(self.voiced_since(start)) >= count, timeout, f"{count} voiced frames"
        )
        return self.voiced_since(start)[:count]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def assert_continuous(heard: Sequence[Heard]) -> None:
    """Discord's stream runs on: every sequence number once, timestamps 960 apart."""
    for a, b in itertools.pairwise(heard):
        assert (b.sequence - a.sequence) & 0xFFFF == 1, f"sequence {a.sequence} -> {b.sequence}"
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == FRAME_SAMPLES, (
            f"timestamp {a.timestamp} -> {b.timestamp} at sequence {b.sequence}"
        )


def concealments(bridge: Bridge) -> int:
    totals = bridge.counters().streams
    return totals.concealed_frames + totals.fec_recovered


def describe(heard: Sequence[Heard], packets: Sequence[bytes], around: int) -> str:
    """What the bot sent near frame `around`: A = the speaker's own packet, S = silence,
    E = encoded here (mix or concealment); for failure messages."""
    own = set(packets)
    kinds = ["A" if h.opus in own else "S" if h.opus == OPUS_SILENCE_FRAME else "E" for h in heard]
    return "".join(kinds[max(0, around - 10) : around + 10])


def frame_levels(heard: Sequence[Heard]) -> np.ndarray:
    pcm = decode_opus([h.opus for h in heard])
    return np.sqrt((pcm.reshape(len(heard), -1) ** 2).mean(axis=1))


def band_share(pcm: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48_000)
    return float(spectrum[np.abs(freqs - hz) < 30].sum() / spectrum.sum())


@contextlib.asynccontextmanager
async def listened(
    realtime: RealtimeClient, directory: InMemoryDirectory
) -> AsyncIterator[tuple[Bridge, VoiceLink, BotVoiceSession, DiscordEar]]:
    """A bridged channel whose member Alice listens (the fake decrypts DAVE as her): the
    bridge, its voice link, the bot's voice session and what Alice hears."""
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        await fake.user_joins_voice(guild, alice, voice)
        async with bridged(fake, guild, voice.id, realtime, directory) as (
            _,
            bridge,
            link,
            session,
        ):
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            ear = DiscordEar(session)
            try:
                yield bridge, link, session, ear
            finally:
                await ear.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_lone_speaker_passes_through_and_mixing_comes_and_goes_without_a_seam(
    api, realtime, directory
):
    async with (
        listened(realtime, directory) as (bridge, link, _, ear),
        speaker(api, directory, "ann", TONE_HZ) as ann,
    ):
        await ear.wait_voiced(0, 10)
        concealed = concealments(bridge)
        alone = await ear.wait_voiced(len(ear.heard), 40)
        # Byte for byte: what Discord got is Ann's Opus, DAVE-encrypted by discord.py;
        # only a frame the jitter buffer had to conceal (a late packet) is encoded.
        foreign = [h for h in alone if h.opus not in set(ann.packets)]
        assert len(foreign) <= concealments(bridge) - concealed
        assert abs(dominant_frequency(decode_opus([h.opus for h in alone])) - TONE_HZ) < 3
        encoded = link.counters.frames_encoded
        concealed = concealments(bridge)
        start = len(ear.heard)
        async with speaker(api, directory, "bob", OTHER_HZ):
            await wait_until(lambda: link.counters.frames_encoded > encoded + 60, 10, "mixing")
        mixed_until = len(ear.heard)
        # Bob left: passthrough again.
        await wait_until(
            lambda: (
                len(ear.voiced_since(mixed_until)) > 60
                and {h.opus for h in ear.voiced_since(mixed_until)[-20:]} <= set(ann.packets)
            ),
            10,
            "passthrough after the mix",
        )
        across = ear.heard[start:]
        concealed = concealments(bridge) - concealed

    assert_continuous(across)
    own = set(ann.packets)
    kinds = "".join("A" if h.opus in own else "E" for h in across)
    # Bob spoke from `start` (index 0) to `mixed_until`; his last frames leave the bridge's
    # jitter buffer a few frames later. Inside that stretch Ann's own packets may show up
    # too (a frame Bob's buffer had nothing for is a passthrough frame: two more seams).
    bob_until = mixed_until - start + 10
    mix = [i for i, kind in enumerate(kinds[:bob_until]) if kind == "E"]
    assert len(mix) > 40, kinds  # of the 60+ encoded while Bob spoke
    mix_start, mix_end = mix[0], mix[-1] + 1
    pcm = decode_opus([across[i].opus for i in mix[10:-10]])
    assert band_share(pcm, TONE_HZ) > 0.2 and band_share(pcm, OTHER_HZ) > 0.2, "not the mix"
    # After it, an encoded frame is a frame the jitter buffer concealed (a late packet on a
    # loaded machine), never a seam of ours: as many as the bridge counted, at most.
    stray = [i for i in range(bob_until, len(kinds)) if kinds[i] == "E"]
    assert len(stray) <= concealed, f"{len(stray)} encoded frames after the mix: {kinds}"
    # Ann's tone never dips, at either seam: every 20 ms frame within 6 dB of the median,
    # after the first few (a decoder that starts mid-stream fades in) and apart from the
    # concealed frames and the few after each (they fade out and back in by design).
    levels = frame_levels(across)
    masked = set(range(5)) | {i + k for i in stray for k in range(6)}
    checked = [i for i in range(len(across)) if i not in masked]
    assert {mix_start, mix_start + 1, mix_end, mix_end + 1} <= set(checked), "seams masked"
    low = min(checked, key=lambda i: levels[i])
    median = np.median(levels[checked])
    assert levels[low] > median / 2, (
        f"frame {low} at {levels[low]:.3f} (median {median:.3f}): {describe(across, own, low)}"
    )
    assert link.counters.frames_passed_through > 80
    assert bridge.mixdown.stats.decode_errors == 0 and link.counters.send_errors == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_quiet_room_sends_nothing_and_speech_after_it_arrives_intact(
    api, realtime, directory
):
    async with (
        listened(realtime, directory) as (bridge, link, session, ear),
        speaker(api, directory, "ann", TONE_HZ) as ann,
    ):
        await ear.wait_voiced(0, 25)
        assert session.speaking == 1
        ann.talking.clear()
        stopped_at = len(ear.heard)
        await wait_until(lambda: session.speaking == 0, 5, "SPEAKING off")
        await asyncio.sleep(1.0)  # the pause: nothing may arrive in it
        concealed = concealments(bridge)
        ann.talking.set()
        resumed = await ear.wait_voiced(len(ear.heard), 40)
        assert session.speaking == 1

    # Discord's convention: the last voiced frames, a few silence frames, then nothing.
    after_stop = ear.heard[stopped_at:]
    gaps = [i for i in range(1, len(after_stop)) if after_stop[i].at - after_stop[i - 1].at > 0.5]
    assert len(gaps) == 1, f"{len(gaps)} gaps in what the bot sent after Ann stopped"
    before, after = after_stop[: gaps[0]], after_stop[gaps[0] :]
    silences = [h for h in before if h.opus == OPUS_SILENCE_FRAME]
    assert 3 <= len(silences) <= 15, f"{len(silences)} silence frames"
    assert len(before) - len(silences) <= 10, "voiced frames long after the speaker stopped"
    assert before[-1].opus == OPUS_SILENCE_FRAME
    last, first = before[-1], after[0]
    assert first.at - last.at > 0.9, "frames were sent during the pause"
    assert (first.sequence - last.sequence) & 0xFFFF == 1
    # The timestamp counts the pause (to within the player's wake-up), never freezes.
    paused_s = ((first.timestamp - last.timestamp) & 0xFFFFFFFF) / 48_000
    assert abs(paused_s - (first.at - last.at)) < 0.1, f"timestamp gap {paused_s:.3f} s"
    assert_continuous(after)
    # And the speech after it is Ann's, untouched, at full level once a decoder that starts
    # mid-tone has faded in (a few frames, as for any Discord client joining a call).
    own = set(ann.packets)
    stray = [i for i, h in enumerate(resumed) if h.opus not in own]
    assert len(stray) <= concealments(bridge) - concealed  # concealed frames, encoded
    assert abs(dominant_frequency(decode_opus([h.opus for h in resumed])) - TONE_HZ) < 3
    levels = frame_levels(resumed)
    masked = set(range(5)) | {i + k for i in stray for k in range(6)}
    checked = [i for i in range(len(resumed)) if i not in masked]
    assert len(checked) > 20
    low = min(checked, key=lambda i: levels[i])
    median = np.median(levels[checked])
    assert levels[low] > median / 2, (
        f"frame {low} at {levels[low]:.3f} (median {median:.3f}): {describe(resumed, own, low)}"
    )
    assert link.counters.send_pauses >= 1 and link.counters.frames_suppressed > 25
