"""The fake Discord against the real discord.py 2.7.1 and discord-ext-voice-recv: no mocks.

Each test builds a world, logs a real `discord.Client` in, and checks one protocol path end to
end: cache after READY/GUILD_CREATE, slash-command sync and interaction responses, voice with and
without DAVE in both directions (tones found by FFT after both decryption layers), MLS group
changes mid-call, and what corrupted media does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import davey
import discord
import pytest
from discord import app_commands
from discord.ext import voice_recv

from tests.fakes.discord import FakeDiscord, FakeGuild, FakeVoiceUser, ReplyKind
from tests.fakes.discord.audio import decode_opus, dominant_frequency, encode_tone, load_libopus
from tests.fakes.discord.state import Permission
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

TONE_FRAMES = 50  # 1 s of 20 ms packets
ANALYSED_FRAMES = 40  # FFT over 0.8 s: 1.25 Hz bins
FREQUENCY_TOLERANCE_HZ = 3.0
OPUS_SILENCE = b"\xf8\xff\xfe"


class OpusFrames(discord.AudioSource):
    """Pre-encoded packets for VoiceClient.play (no re-encoding by discord.py)."""

    def __init__(self, packets: list[bytes]) -> None:
        self._packets = list(packets)

    def is_opus(self) -> bool:
        return True

    def read(self) -> bytes:
        return self._packets.pop(0) if self._packets else b""


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Every test must end with no task of its own running and no file descriptor left open."""
    fds_before = len(os.listdir("/proc/self/fd"))
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not pending, f"tasks left running: {pending}"
    assert len(os.listdir("/proc/self/fd")) <= fds_before, "file descriptors leaked"


@contextlib.asynccontextmanager
async def logged_in(
    fake: FakeDiscord, *, setup: Callable[[discord.Client], None] | None = None
) -> AsyncIterator[discord.Client]:
    """A real client, connected and READY, closed (and its task awaited) on exit."""
    intents = discord.Intents.default()
    intents.members = True
    with fake.patch_discord():
        client = discord.Client(
            intents=intents, connector=fake.connector(), guild_ready_timeout=0.1
        )
        if setup is not None:
            setup(client)
        await client.login(fake.token)
        runner = asyncio.create_task(client.connect(), name="discord-client")
        try:
            async with asyncio.timeout(10):
                await client.wait_until_ready()
            yield client
        finally:
            await client.close()
            await runner
            # discord.py schedules fire-and-forget tasks (voice state handlers); let them end.
            await asyncio.sleep(0.05)


async def connect_voice(
    client: discord.Client, fake: FakeDiscord, guild: FakeGuild, channel_id: int
):
    channel = client.get_channel(channel_id)
    assert isinstance(channel, discord.VoiceChannel)
    vc = await channel.connect(cls=voice_recv.VoiceRecvClient, timeout=10)
    return vc, await fake.bot_voice(guild)


def frequency_of(packets: list[bytes]) -> float:
    return dominant_frequency(decode_opus(packets[-ANALYSED_FRAMES:]))


async def collect_from_bot(session, count: int) -> list[bytes]:
    """`count` Opus packets the bot sent, after transport and DAVE decryption."""
    packets: list[bytes] = []
    while len(packets) < count:
        packets.append(await session.next_opus(timeout=5))
    return packets


class SinkQueue:
    """Frames come on voice_recv's router thread: hop to the loop (docs/discord-voice.md §2)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    def sink(self) -> voice_recv.BasicSink:
        def write(_user: object, data: voice_recv.VoiceData) -> None:
            if data.opus:  # FakePackets from voice_recv's gap filling carry b""
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (data.packet.ssrc, data.opus))

        return voice_recv.BasicSink(write, decode=False)

    async def collect(
        self, vc: voice_recv.VoiceRecvClient, per_user: int, users: set[int]
    ) -> dict[int, list[bytes]]:
        """Frames per user id, DAVE-decrypted when the connection is on DAVE."""
        frames: dict[int, list[bytes]] = {u: [] for u in users}
        async with asyncio.timeout(10):
            while any(len(f) < per_user for f in frames.values()):
                ssrc, payload = await self.queue.get()
                user_id = vc._get_id_from_ssrc(ssrc)
                if user_id not in frames or payload == OPUS_SILENCE:
                    continue
                session = vc._connection.dave_session
                if vc._connection.dave_protocol_version and session is not None and session.ready:
                    payload = session.decrypt(user_id, davey.MediaType.audio, payload)
                frames[user_id].append(payload)
        return frames


# -- gateway and cache -----------------------------------------------------------------------


async def test_ready_and_guild_create_fill_the_cache() -> None:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Switchboard HQ")
        text = guild.add_text_channel("general")
        voice = guild.add_voice_channel("Lounge")
        admin_role = guild.add_role("admins", Permission.MANAGE_GUILD)
        admin = fake.add_member(guild, "carol", roles=[admin_role])
        alice = fake.add_member(guild, "alice")
        await fake.user_joins_voice(guild, alice, voice)

        async with logged_in(fake) as client:
            assert client.user is not None and client.user.id == fake.bot.id
            cached = client.get_guild(guild.id)
            assert cached is not None and cached.name == "Switchboard HQ"
            assert isinstance(cached.get_channel(text.id), discord.TextChannel)
            assert isinstance(cached.get_channel(voice.id), discord.VoiceChannel)
            assert {m.id for m in cached.members} == set(guild.members)
            member = cached.get_member(admin.id)
            assert member is not None and member.guild_permissions.manage_guild
            assert not cached.get_member(alice.id).guild_permissions.manage_guild
            assert [m.id for m in cached.get_channel(voice.id).members] == [alice.id]
            assert cached.me.guild_permissions.connect and cached.me.guild_permissions.speak
        assert fake.rest.unhandled == []


# -- slash commands --------------------------------------------------------------------------


async def test_slash_commands_sync_and_interactions_are_recorded() -> None:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test")
        text = guild.add_text_channel("general")
        voice = guild.add_voice_channel("Lounge")
        admin = fake.add_member(
            guild, "carol", roles=[guild.add_role("admins", Permission.MANAGE_GUILD)]
        )
        alice = fake.add_member(guild, "alice")

        def setup(client: discord.Client) -> None:
            tree = app_commands.CommandTree(client)
            bridge = app_commands.Group(name="bridge", description="Bridge voice", guild_only=True)

            @bridge.command(name="link", description="Link a voice channel to a room")
            @app_commands.checks.has_permissions(manage_guild=True)
            async def link(
                interaction: discord.Interaction, room: str, channel: discord.VoiceChannel
            ) -> None:
                await interaction.response.defer(thinking=True)
                await interaction.followup.send(f"linked {channel.name} to {room}")

            @bridge.command(name="status", description="Show the bridge")
            async def status(interaction: discord.Interaction) -> None:
                await interaction.response.send_message("idle", ephemeral=True)

            @tree.error
            async def on_error(
                interaction: discord.Interaction, error: app_commands.AppCommandError
            ) -> None:
                if isinstance(error, app_commands.MissingPermissions):
                    await interaction.response.send_message(
                        "you need Manage Server", ephemeral=True
                    )

            tree.add_command(bridge, guild=discord.Object(guild.id))
            client.tree = tree  # type: ignore[attr-defined]

        async with logged_in(fake, setup=setup) as client:
            synced = await client.tree.sync(guild=discord.Object(guild.id))  # type: ignore[attr-defined]
            assert [c.name for c in synced] == ["bridge"]
            assert [c["name"] for c in fake.commands.list(guild.id)] == ["bridge"]

            status = await fake.send_interaction(guild, text, alice, "bridge", subcommand="status")
            reply = await status.response()
            assert reply.kind is ReplyKind.CALLBACK and reply.content == "idle" and reply.ephemeral

            denied = await fake.send_interaction(
                guild, text, alice, "bridge", {"room": "lobby", "channel": voice}, subcommand="link"
            )
            assert await denied.final_text() == "you need Manage Server"

            allowed = await fake.send_interaction(
                guild, text, admin, "bridge", {"room": "lobby", "channel": voice}, subcommand="link"
            )
            assert (await allowed.response()).deferred
            assert await allowed.final_text() == "linked Lounge to lobby"
            assert [r.kind for r in allowed.replies] == [ReplyKind.CALLBACK, ReplyKind.FOLLOWUP]

            first = await fake.next_interaction_reply()
            assert first.interaction_id == status.id
        assert fake.interactions.violations == []
        assert fake.rest.unhandled == []


async def test_first_followup_after_a_deferral_has_the_deferrals_visibility() -> None:
    """Discord's rule: the first follow-up fills in the "thinking" message, so a public
    deferral makes an ephemeral error public, and an ephemeral deferral keeps a public
    reply private. Later follow-ups are new messages with their own flags."""
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test")
        text = guild.add_text_channel("general")
        alice = fake.add_member(guild, "alice")

        def setup(client: discord.Client) -> None:
            tree = app_commands.CommandTree(client)

            @tree.command(name="loud", description="Defers publicly")
            async def loud(interaction: discord.Interaction) -> None:
                await interaction.response.defer(thinking=True)
                await interaction.followup.send("secret error", ephemeral=True)
                await interaction.followup.send("second, private", ephemeral=True)

            @tree.command(name="quiet", description="Defers ephemerally")
            async def quiet(interaction: discord.Interaction) -> None:
                await interaction.response.defer(thinking=True, ephemeral=True)
                await interaction.followup.send("meant for all", ephemeral=False)
                await interaction.followup.send("for all indeed", ephemeral=False)

            tree.copy_global_to(guild=discord.Object(guild.id))
            client.tree = tree  # type: ignore[attr-defined]

        async with logged_in(fake, setup=setup) as client:
            await client.tree.sync(guild=discord.Object(guild.id))  # type: ignore[attr-defined]
            loud = await fake.send_interaction(guild, text, alice, "loud")
            assert not (await loud.response()).ephemeral
            first, second = [await loud.next_reply() for _ in range(3)][1:]
            assert first.kind is ReplyKind.FOLLOWUP and first.requested_ephemeral
            assert not first.ephemeral, "the first follow-up must take the public deferral's look"
            assert first.message_id == loud.original_id
            assert second.ephemeral and second.message_id != loud.original_id

            quiet = await fake.send_interaction(guild, text, alice, "quiet")
            assert (await quiet.response()).ephemeral
            first, second = [await quiet.next_reply() for _ in range(3)][1:]
            assert first.ephemeral and not first.requested_ephemeral
            assert not second.ephemeral
        assert fake.interactions.violations == []


# -- voice -----------------------------------------------------------------------------------


async def test_bot_audio_reaches_the_fake_through_dave() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        await fake.user_joins_voice(guild, alice, voice)

        async with logged_in(fake) as client:
            vc, session = await connect_voice(client, fake, guild, voice.id)
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            assert vc._connection.dave_protocol_version == 1
            assert vc._connection.dave_session is not None and vc._connection.dave_session.ready

            vc.play(OpusFrames(encode_tone(440, TONE_FRAMES)))
            packets = await collect_from_bot(session, ANALYSED_FRAMES)
            assert abs(frequency_of(packets) - 440) < FREQUENCY_TOLERANCE_HZ
            frame = await session.next_frame()
            assert frame.dave_encrypted and frame.error is None and frame.payload != frame.opus
            await vc.disconnect()


async def test_fake_users_audio_reaches_voice_recv_and_decrypts_with_dave() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice, bob = fake.add_member(guild, "alice"), fake.add_member(guild, "bob")
        speakers = [await fake.user_joins_voice(guild, m, voice) for m in (alice, bob)]

        async with logged_in(fake) as client:
            vc, _ = await connect_voice(client, fake, guild, voice.id)
            await fake.dave(voice).wait_for_members({alice.id, bob.id, fake.bot.id})
            sink = SinkQueue()
            vc.listen(sink.sink())

            await asyncio.gather(
                speakers[0].play(encode_tone(300, TONE_FRAMES)),
                speakers[1].play(encode_tone(700, TONE_FRAMES)),
            )
            frames = await sink.collect(vc, ANALYSED_FRAMES, {alice.id, bob.id})
            assert abs(frequency_of(frames[alice.id]) - 300) < FREQUENCY_TOLERANCE_HZ
            assert abs(frequency_of(frames[bob.id]) - 700) < FREQUENCY_TOLERANCE_HZ
            await vc.disconnect()


async def test_voice_without_dave_in_both_directions() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=0) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        speaker = await fake.user_joins_voice(guild, alice, voice)

        async with logged_in(fake) as client:
            vc, session = await connect_voice(client, fake, guild, voice.id)
            assert vc._connection.dave_protocol_version == 0
            assert vc._connection.dave_session is None
            sink = SinkQueue()
            vc.listen(sink.sink())

            vc.play(OpusFrames(encode_tone(440, TONE_FRAMES)))
            await speaker.play(encode_tone(300, TONE_FRAMES))
            packets = await collect_from_bot(session, ANALYSED_FRAMES)
            assert abs(frequency_of(packets) - 440) < FREQUENCY_TOLERANCE_HZ
            frames = await sink.collect(vc, ANALYSED_FRAMES, {alice.id})
            assert abs(frequency_of(frames[alice.id]) - 300) < FREQUENCY_TOLERANCE_HZ
            await vc.disconnect()


async def test_members_joining_and_leaving_mid_call_move_the_epoch() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice, bob = fake.add_member(guild, "alice"), fake.add_member(guild, "bob")
        dave = fake.dave(voice)
        # Make the bot commit whenever it is asked to, so discord.py's commit path runs too.
        dave.preferred_committer = fake.bot.id
        await fake.user_joins_voice(guild, alice, voice)

        async with logged_in(fake) as client:
            vc, _ = await connect_voice(client, fake, guild, voice.id)
            await dave.wait_for_members({alice.id, fake.bot.id})
            bot_session = vc._connection.dave_session
            assert bot_session is not None and bot_session.epoch == 1

            bob_voice = await fake.user_joins_voice(guild, bob, voice)
            await dave.wait_for_members({alice.id, bob.id, fake.bot.id})
            assert bot_session.epoch == 2 and bob_voice.dave_ready

            await fake.user_leaves_voice(guild, alice)
            await dave.wait_for_members({bob.id, fake.bot.id})
            assert bot_session.epoch == 3
            assert sorted(bot_session.get_user_ids()) == sorted([str(bob.id), str(fake.bot.id)])

            sink = SinkQueue()
            vc.listen(sink.sink())
            await bob_voice.play(encode_tone(500, TONE_FRAMES))
            frames = await sink.collect(vc, ANALYSED_FRAMES, {bob.id})
            assert abs(frequency_of(frames[bob.id]) - 500) < FREQUENCY_TOLERANCE_HZ
            await vc.disconnect()


async def test_tampered_frames_fail_dave_and_garbage_is_dropped() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        speaker: FakeVoiceUser = await fake.user_joins_voice(guild, alice, voice)

        async with logged_in(fake) as client:
            vc, _ = await connect_voice(client, fake, guild, voice.id)
            await fake.dave(voice).wait_for_members({alice.id, fake.bot.id})
            loop = asyncio.get_running_loop()
            received: asyncio.Queue[bytes] = asyncio.Queue()
            vc.listen(
                voice_recv.BasicSink(
                    lambda _u, d: d.opus and loop.call_soon_threadsafe(received.put_nowait, d.opus),
                    decode=False,
                )
            )
            tone = encode_tone(300, 3)

            speaker.send_raw(b"\x80\x78" + os.urandom(40))  # fails transport decryption: dropped
            tampered = bytearray(speaker.dave_encrypt(tone[0]))
            tampered[1] ^= 0xFF
            speaker.send_frame(bytes(tampered))
            speaker.send_opus(tone[1])
            speaker.send_opus(tone[2])  # voice_recv's jitter buffer holds the newest packet

            session = vc._connection.dave_session
            assert session is not None
            bad = await asyncio.wait_for(received.get(), 5)
            with pytest.raises(ValueError):
                session.decrypt(alice.id, davey.MediaType.audio, bad)
            good = await asyncio.wait_for(received.get(), 5)
            assert session.decrypt(alice.id, davey.MediaType.audio, good) == tone[1]
            await vc.disconnect()


async def test_kicking_the_bot_from_voice_disconnects_it() -> None:
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")

        async with logged_in(fake) as client:
            vc, session = await connect_voice(client, fake, guild, voice.id)
            await fake.user_leaves_voice(guild, fake.bot)
            await asyncio.wait_for(session.closed.wait(), 5)
            await wait_until(lambda: not vc.is_connected() and not client.voice_clients)


async def test_dave_downgrade_and_upgrade_transitions() -> None:
    load_libopus()
    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        await fake.user_joins_voice(guild, alice, voice)
        dave = fake.dave(voice)

        async with logged_in(fake) as client:
            vc, session = await connect_voice(client, fake, guild, voice.id)
            await dave.wait_for_members({alice.id, fake.bot.id})
            state = vc._connection

            dave.downgrade()  # op 21 (version 0) → op 23 from everyone → op 22
            await dave.wait_until(lambda d: d.settled, timeout=5)
            await wait_until(lambda: state.dave_protocol_version == 0)
            vc.play(OpusFrames(encode_tone(440, 5)))
            frame = await session.next_frame()
            assert not frame.dave_encrypted and frame.opus is not None
            vc.stop()

            dave.upgrade()  # op 24 epoch 1: everyone re-keys, a new group forms
            await dave.wait_for_members({alice.id, fake.bot.id})
            assert state.dave_protocol_version == 1 and state.dave_session.ready
            session.drain_frames()
            vc.play(OpusFrames(encode_tone(440, TONE_FRAMES)))
            packets = await collect_from_bot(session, ANALYSED_FRAMES)
            assert abs(frequency_of(packets) - 440) < FREQUENCY_TOLERANCE_HZ
            assert (await session.next_frame()).dave_encrypted
            await vc.disconnect()


async def test_gateway_drop_is_resumed_without_losing_events() -> None:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")

        async with logged_in(fake) as client:
            resumed = asyncio.Event()

            @client.event
            async def on_resumed() -> None:
                resumed.set()

            fake.gateway.drop_connections()
            # Dispatched while the bot is away: buffered and replayed on RESUME.
            await fake.user_joins_voice(guild, alice, voice)
            await asyncio.wait_for(resumed.wait(), 10)
            member = client.get_guild(guild.id).get_member(alice.id)
            await wait_until(lambda: member.voice is not None)
            assert member.voice.channel.id == voice.id
