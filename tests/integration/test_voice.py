"""The Discord voice plane end to end: real discord.py 2.7.1 and voice_recv against the fake
Discord (DAVE on unless said otherwise), real bridges on the in-process local SFU, and a plain
aiortc participant in the room. Audio is checked by FFT after every layer is peeled, and
Discord -> room is checked byte-exact too (no transcoding on that side).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable

import discord
import pytest
from discord.ext import voice_recv

from bot.voice import VoiceCounters, VoiceLink, VoiceLinkState, compat, track_name
from media.audio import OPUS_SILENCE_FRAME
from media.backoff import Backoff
from media.bridge import Bridge, BridgeConfig, SpeakerInput
from media.peer import PeerConfig
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory, MemberKind, TrackInfo
from tests.fakes.discord import FakeDiscord, FakeGuild, FakeVoiceUser
from tests.fakes.discord.audio import decode_opus, dominant_frequency, encode_tone, load_libopus
from tests.fakes.discord.voice_session import BotVoiceSession
from tests.support import opus_source
from tests.support.rtc import Api, Client
from tests.support.waiting import wait_until

ROOM = "lobby"
TONE_FRAMES = 50
ANALYSED_FRAMES = 40  # 0.8 s: 1.25 Hz FFT bins
FREQUENCY_TOLERANCE_HZ = 3.0
FAST_PEER = PeerConfig(recovery=Backoff(initial_s=0.05, max_s=0.5))
FAST_RECONNECT = Backoff(initial_s=0.2, max_s=1.0)
VOICE_THREADS = (
    "packet-router-",
    "sink-event-router-",
    "speaking-timer-",
    "voice-udp-keepalive-",
    "audioreader-stopper-",
    "audio-player:",
)
"""voice_recv's reader threads and discord.py's player: the link starts them, and joins them."""
SOCKET_READER = "voice-socket-reader:"
"""discord.py's, one per connection: told to stop on disconnect, it still sits out the rest of
its select() (up to 30 s) on the closed socket before it sees the flag."""


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """No task left running, no voice thread left behind (discord.py's socket readers at least
    told to stop), no file descriptor leaked."""
    fds_before = len(os.listdir("/proc/self/fd"))
    # Threads other tests leaked (voice_recv's own keepalive, used without our link) are not ours.
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not pending, f"tasks left running: {pending}"
    deadline = time.monotonic() + 3.0
    while True:
        new = [t for t in threading.enumerate() if t.ident not in threads_before]
        threads = [t.name for t in new if t.name.startswith(VOICE_THREADS)]
        threads += [
            t.name
            for t in new
            if t.name.startswith(SOCKET_READER) and not t._end.is_set()  # type: ignore[attr-defined]
        ]
        if not threads or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not threads, f"voice threads left running: {threads}"
    assert len(os.listdir("/proc/self/fd")) <= fds_before, "file descriptors leaked"


@pytest.fixture
async def realtime(sfu) -> AsyncIterator[RealtimeClient]:
    async with RealtimeClient(
        sfu.base_url,
        sfu.app_id,
        sfu.app_secret,
    ) as client:
        yield client


@pytest.fixture
def directory() -> InMemoryDirectory:
    return InMemoryDirectory()


# -- the bot ------------------------------------------------------------------------------------


class RecordingBridge(Bridge):
    """A real bridge that also remembers what each speaker input was given (payload, ts)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pushed: dict[str, list[tuple[bytes, int | None]]] = {}

    def speaker(
        self, track_name: str, display_name: str = "", user_id: str | None = None
    ) -> SpeakerInput:
        speaker = super().speaker(track_name, display_name, user_id)
        if not getattr(speaker, "_recorded", False):
            log = self.pushed.setdefault(track_name, [])
            push = speaker.push

            def recording_push(payload: bytes, timestamp: int | None = None) -> None:
                log.append((payload, timestamp))
                push(payload, timestamp)

            speaker.push = recording_push  # type: ignore[method-assign]
            speaker._recorded = True  # type: ignore[attr-defined]
        return speaker


@contextlib.asynccontextmanager
async def logged_in(fake: FakeDiscord) -> AsyncIterator[discord.Client]:
    intents = discord.Intents.default()
    intents.members = True
    with fake.patch_discord():
        client = discord.Client(
            intents=intents, connector=fake.connector(), guild_ready_timeout=0.1
        )
        await client.login(fake.token)
        runner = asyncio.create_task(client.connect(), name="discord-client")
        try:
            async with asyncio.timeout(10):
                await client.wait_until_ready()
            yield client
        finally:
            await client.close()
            await runner
            await asyncio.sleep(0.05)  # discord.py's fire-and-forget voice state tasks


@contextlib.asynccontextmanager
async def bridged(
    fake: FakeDiscord,
    guild: FakeGuild,
    channel_id: int,
    realtime: RealtimeClient,
    directory: InMemoryDirectory,
) -> AsyncIterator[tuple[discord.Client, RecordingBridge, VoiceLink, BotVoiceSession]]:
    """The bot logged in, its channel bridged into ROOM: (client, bridge, link, fake session)."""
    async with logged_in(fake) as client:
        bridge = RecordingBridge(
            ROOM, realtime, directory, BridgeConfig(f"discord:{guild.id}", "Lounge", peer=FAST_PEER)
        )
        await bridge.start()
        try:
            channel = client.get_channel(channel_id)
            assert isinstance(channel, discord.VoiceChannel)
            vc = await channel.connect(cls=voice_recv.VoiceRecvClient, timeout=10)
            link = VoiceLink(vc, bridge, guild.id, VoiceCounters(), reconnect=FAST_RECONNECT)
            await link.start()
            try:
                yield client, bridge, link, await fake.bot_voice(guild)
            finally:
                await link.stop()
        finally:
            await bridge.stop()


@contextlib.asynccontextmanager
async def talking(user: FakeVoiceUser, packets: Iterable[bytes]) -> AsyncIterator[list[bytes]]:
    """`user` sends `packets` (cycled) paced at 20 ms until the block ends; yields what was sent."""
    sent: list[bytes] = []

    def cycle() -> Iterable[bytes]:
        for packet in itertools.cycle(list(packets)):
            sent.append(packet)
            yield packet

    task = asyncio.create_task(user.play(cycle()), name=f"talking-{user.user_id}")
    try:
        yield sent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the room -----------------------------------------------------------------------------------


class Participant:
    """A plain aiortc client in the room: publishes a tone as "mic", pulls tracks undecoded."""

    def __init__(self, api: Api, directory: InMemoryDirectory) -> None:
        self.client = Client(api, tap=True)
        self.directory = directory
        self.mids: dict[str, str] = {}

    async def join(self, frequency_hz: float) -> None:
        await self.client.open()
        await self.client.push(
            opus_source.OpusReplayTrack(opus_source.encode_tone(frequency_hz, 50)), "mic"
        )
        await self.directory.join(ROOM, "web", MemberKind.WEB, "web")
        await self.directory.publish(ROOM, "web", TrackInfo(self.client.session_id, "mic", "web"))

    async def published(self, member_id: str) -> dict[str, TrackInfo]:
        members = {m.member_id: m for m in await self.directory.members(ROOM)}
        member = members.get(member_id)
        return {t.track_name: t for t in member.tracks} if member else {}

    async def pull(self, member_id: str, name: str, timeout: float = 10.0) -> str:
        """Pull `member_id`'s track `name` once it is published and flowing; its mid."""
        async with asyncio.timeout(timeout):
            while True:
                track = (await self.published(member_id)).get(name)
                if track is not None:
                    result = await self.client.pull([(track.session_id, name)])
                    item = result["tracks"][0]
                    if "errorCode" not in item:
                        self.mids[name] = item["mid"]
                        return item["mid"]
                await asyncio.sleep(0.05)

    def payloads(self, name: str) -> list[bytes]:
        return [bytes(p.payload) for p in self.client.received[self.mids[name]]]

    async def hear(
        self, name: str, frames: int = ANALYSED_FRAMES, timeout: float = 10.0
    ) -> list[bytes]:
        """The next `frames` non-silent payloads of pulled track `name`."""
        start = len(self.payloads(name))
        async with asyncio.timeout(timeout):
            while True:
                voiced = [p for p in self.payloads(name)[start:] if p != OPUS_SILENCE_FRAME]
                if len(voiced) >= frames:
                    return voiced[:frames]
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.client.close()
        await self.directory.leave(ROOM, "web")


@contextlib.asynccontextmanager
async def participant(
    api: Api, directory: InMemoryDirectory, frequency_hz: float
) -> AsyncIterator[Participant]:
    web = Participant(api, directory)
    await web.join(frequency_hz)
    try:
        yield web
    finally:
        await web.close()


async def bot_output(
    session: BotVoiceSession, frames: int = ANALYSED_FRAMES, *, dave: bool
) -> list[bytes]:
    """`frames` voiced Opus packets the bot sent, after the fake peeled transport and DAVE."""
    session.drain_frames()
    packets: list[bytes] = []
    async with asyncio.timeout(10):
        while len(packets) < frames:
            frame = await session.next_frame()
            assert frame.error is None, frame.error
            if frame.opus == OPUS_SILENCE_FRAME:
                continue
            assert frame.dave_encrypted is dave
            packets.append(frame.opus)
    return packets


def frequency(packets: list[bytes]) -> float:
    return dominant_frequency(decode_opus(packets))


def assert_tone(packets: list[bytes], hz: float) -> None:
    found = frequency(packets)
    assert abs(found - hz) < FREQUENCY_TOLERANCE_HZ, f"expected {hz} Hz, found {found} Hz"


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_two_users_reach_the_room_and_the_room_reaches_discord(api, realtime, directory):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice, bob = fake.add_member(guild, "alice"), fake.add_member(guild, "bob")
        users = [await fake.user_joins_voice(guild, m, voice) for m in (alice, bob)]
        async with bridged(fake, guild, voice.id, realtime, directory) as (
            client,
            bridge,
            link,
            session,
        ):
            await fake.dave(voice).wait_for_members({alice.id, bob.id, fake.bot.id})
            async with (
                participant(api, directory, 1000.0) as web,
                talking(users[0], encode_tone(300, TONE_FRAMES)) as alice_sent,
                talking(users[1], encode_tone(700, TONE_FRAMES)) as bob_sent,
            ):
                member = bridge.config.member_id
                tracks = {
                    alice.id: track_name(guild.id, alice.id),
                    bob.id: track_name(guild.id, bob.id),
                }
                for name in tracks.values():
                    await web.pull(member, name)
                heard = {user_id: await web.hear(name) for user_id, name in tracks.items()}
                # Discord -> room: both users, DAVE peeled, the Opus itself untouched.
                assert_tone(heard[alice.id], 300)
                assert_tone(heard[bob.id], 700)
                assert set(heard[alice.id]) <= set(alice_sent)
                assert set(heard[bob.id]) <= set(bob_sent)
                published = await web.published(member)
                alice_member = client.get_guild(guild.id).get_member(alice.id)
                assert published[tracks[alice.id]].display_name == alice_member.display_name
                assert published[tracks[alice.id]].user_id == str(alice.id)
                # Room -> Discord: the participant's tone, DAVE-encrypted by discord.py.
                assert_tone(await bot_output(session, dave=True), 1000)
            counters = link.counters
            assert counters.dave_decrypted > 2 * ANALYSED_FRAMES
            assert counters.dave_failures == 0 and counters.dave_not_ready == 0
            assert counters.frames_sent > ANALYSED_FRAMES and counters.send_errors == 0
            assert link.state is VoiceLinkState.CONNECTED


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_users_joining_and_leaving_mid_call_do_not_interrupt_the_others(
    api, realtime, directory
):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice, bob = fake.add_member(guild, "alice"), fake.add_member(guild, "bob")
        dave = fake.dave(voice)
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with bridged(fake, guild, voice.id, realtime, directory) as (_, bridge, link, _):
            await dave.wait_for_members({alice.id, fake.bot.id})
            session = compat.dave_state(link.voice_client).session
            member = bridge.config.member_id
            alice_track, bob_track = track_name(guild.id, alice.id), track_name(guild.id, bob.id)
            async with (
                participant(api, directory, 1000.0) as web,
                talking(alice_voice, encode_tone(400, TONE_FRAMES)) as alice_sent,
            ):
                await web.pull(member, alice_track)
                await web.hear(alice_track, 10)
                start = len(web.payloads(alice_track))
                epoch = session.epoch

                bob_voice = await fake.user_joins_voice(guild, bob, voice)
                await dave.wait_for_members({alice.id, bob.id, fake.bot.id})
                assert session.epoch == epoch + 1
                async with talking(bob_voice, encode_tone(800, TONE_FRAMES)):
                    await web.pull(member, bob_track)
                    assert_tone(await web.hear(bob_track), 800)
                await fake.user_leaves_voice(guild, bob)
                await dave.wait_for_members({alice.id, fake.bot.id})
                assert session.epoch == epoch + 2
                await wait_until(lambda: bob.id not in link.speakers)
                async with asyncio.timeout(5):
                    while bob_track in await web.published(member):
                        await asyncio.sleep(0.05)

                # Alice was heard throughout both transitions, every frame as she sent it.
                assert_tone(await web.hear(alice_track), 400)
                across = web.payloads(alice_track)[start:]
                assert len(across) > 50
                assert set(across) <= set(alice_sent), "alice lost frames to DAVE across the epochs"
                # Her RTP timestamps pass through: a frame lost on the way would leave a gap.
                arrivals = web.client.received[web.mids[alice_track]][start:]
                steps = {
                    (b.timestamp - a.timestamp) & 0xFFFFFFFF
                    for a, b in itertools.pairwise(arrivals)
                }
                assert steps == {960}, f"timestamp steps {steps}"
            assert link.counters.dave_failures == 0
            assert link.counters.dave_not_ready == 0
            assert link.counters.speakers_removed >= 1


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_silence_passes_and_a_corrupted_frame_becomes_counted_silence(
    api, realtime, directory
):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with bridged(fake, guild, voice.id, realtime, directory) as (_, bridge, link, _):
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            track = track_name(guild.id, alice.id)
            tone = encode_tone(350, 12)
            # tone, tone, silence, silence, tone, TAMPERED, tone...: paced like a client.
            for index, packet in enumerate(tone):
                if index in (2, 3):
                    alice_voice.send_frame(OPUS_SILENCE_FRAME)
                elif index == 5:
                    frame = bytearray(alice_voice.dave_encrypt(packet))
                    frame[1] ^= 0xFF
                    alice_voice.send_frame(bytes(frame))
                else:
                    alice_voice.send_opus(packet)
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(bridge.pushed.get(track, [])) >= len(tone))
            payloads = [p for p, _ in bridge.pushed[track]]
            expected = list(tone)
            expected[2] = expected[3] = expected[5] = OPUS_SILENCE_FRAME
            assert payloads == expected
            timestamps = [ts for _, ts in bridge.pushed[track]]
            assert all(b - a == 960 for a, b in itertools.pairwise(timestamps))
            assert link.counters.dave_failures == 1
            assert link.counters.silence_frames == 2


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_frames_before_the_speaking_mapping_are_held_then_delivered(api, realtime, directory):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with bridged(fake, guild, voice.id, realtime, directory) as (_, bridge, link, _):
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            track = track_name(guild.id, alice.id)
            tone = encode_tone(450, 8)
            alice_voice.speaking = True  # send without announcing: SPEAKING comes late
            for packet in tone[:5]:
                alice_voice.send_opus(packet)
                await asyncio.sleep(0.02)
            await wait_until(lambda: link.counters.unmapped_buffered == 5)
            assert track not in bridge.pushed
            alice_voice.set_speaking(True)  # op 5 maps the SSRC: what was held goes at once
            await wait_until(lambda: len(bridge.pushed.get(track, [])) == 5)
            for packet in tone[5:]:
                alice_voice.send_opus(packet)
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(bridge.pushed.get(track, [])) >= len(tone))
            assert [p for p, _ in bridge.pushed[track]] == tone
            assert link.counters.unmapped_flushed == 5
            assert link.counters.unmapped_dropped == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_without_dave_both_directions_work(api, realtime, directory):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=0) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with bridged(fake, guild, voice.id, realtime, directory) as (
            _,
            bridge,
            link,
            session,
        ):
            assert compat.dave_state(link.voice_client).protocol_version == 0
            async with (
                participant(api, directory, 1000.0) as web,
                talking(alice_voice, encode_tone(300, TONE_FRAMES)) as sent,
            ):
                track = track_name(guild.id, alice.id)
                await web.pull(bridge.config.member_id, track)
                heard = await web.hear(track)
                assert_tone(heard, 300)
                assert set(heard) <= set(sent)
                assert_tone(await bot_output(session, dave=False), 1000)
            assert link.counters.dave_decrypted == 0 and link.counters.dave_failures == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_kicked_bot_rejoins_and_moved_bot_returns(api, realtime, directory):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        elsewhere = guild.add_voice_channel("Elsewhere")
        alice = fake.add_member(guild, "alice")
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with (
            bridged(fake, guild, voice.id, realtime, directory) as (_, bridge, link, _),
            participant(api, directory, 1000.0) as web,
            talking(alice_voice, encode_tone(300, TONE_FRAMES)),
        ):
            track = track_name(guild.id, alice.id)
            await web.pull(bridge.config.member_id, track)
            await web.hear(track, 10)

            first = link.voice_client
            await fake.user_leaves_voice(guild, fake.bot)  # kicked: VSU without channel, 4014
            await wait_until(lambda: link.voice_client is not first, what="rejoin")
            await link.wait_for_state(VoiceLinkState.CONNECTED, 15)
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            assert link.counters.reconnects == 1
            assert_tone(await web.hear(track), 300)
            assert_tone(await bot_output(await fake.bot_voice(guild), dave=True), 1000)

            # Moved by someone else: VSU with the other channel, then VOICE_SERVER_UPDATE.
            gateway = fake.gateway.primary
            fake.on_voice_state_request(
                gateway, {"guild_id": str(guild.id), "channel_id": str(elsewhere.id)}
            )
            await wait_until(lambda: link.counters.moves_reverted == 1, what="move noticed")
            await wait_until(
                lambda: (
                    link.voice_client.is_connected() and link.voice_client.channel.id == voice.id
                ),
                15,
                "moved back",
            )
            await link.wait_for_state(VoiceLinkState.CONNECTED, 15)
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            assert_tone(await web.hear(track), 300)
            assert_tone(await bot_output(await fake.bot_voice(guild), dave=True), 1000)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_voice_websocket_killed_by_a_dave_error_is_rebuilt(api, realtime, directory):
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        alice_voice = await fake.user_joins_voice(guild, alice, voice)
        async with (
            bridged(fake, guild, voice.id, realtime, directory) as (_, bridge, link, session),
            participant(api, directory, 1000.0),
            talking(alice_voice, encode_tone(300, TONE_FRAMES)),
        ):
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            track = track_name(guild.id, alice.id)
            await wait_until(lambda: len(bridge.pushed.get(track, [])) > 10)
            first = link.voice_client
            # A second external sender makes davey raise inside discord.py's MLS handler
            # (gateway.py:1044), which nothing catches: the voice websocket task dies while
            # the client still says it is connected.
            session.send_external_sender(fake.voice.external_sender.package())
            await wait_until(lambda: link.voice_client is not first, 10, "rebuilt")
            await link.wait_for_state(VoiceLinkState.CONNECTED, 15)
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            assert link.counters.reconnects == 1
            heard = len(bridge.pushed[track])
            await wait_until(lambda: len(bridge.pushed[track]) > heard + 25)
            assert_tone([p for p, _ in bridge.pushed[track][-ANALYSED_FRAMES:]], 300)
            assert_tone(await bot_output(await fake.bot_voice(guild), dave=True), 1000)
