"""The bot's control plane through real discord.py against the protocol-level fake Discord:
slash commands, the mapping store across restarts, auto mode, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.service import Service
from bot.startup import StartupError
from bot.voice import VoiceLink
from media.audio import OPUS_SILENCE_FRAME
from media.peer import PeerState
from media.rooms import MemberKind
from media.rooms_redis import RedisDirectory
from tests.fakes.discord import FakeDiscord, Permission
from tests.support.postgres import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def write_config(path: Path, guild_id: int, extra: str = "") -> Path:
    path.write_text(
        f"""
[sfu]
port = 0

[http]
port = 0

[discord]
dev_guild_id = {guild_id}
auto_leave_delay_s = 0.5

[store]
path = "{path.parent / "store.sqlite3"}"
{extra}
"""
    )
    return path


@contextlib.asynccontextmanager
async def running(
    fake: FakeDiscord, config: Path, environ: dict[str, str] | None = None
) -> AsyncIterator[Service]:
    settings = load_settings(config, environ={"DISCORD_TOKEN": fake.token, **(environ or {})})
    with fake.patch_discord():
        service = Service(settings, link_factory=VoiceLink, connector_factory=fake.connector)
        await service.start()
        try:
            async with asyncio.timeout(15):
                while service.bot is None or not service.bot.is_ready():
                    await asyncio.sleep(0.02)
            yield service
        finally:
            await service.stop()


@pytest.fixture
async def world(tmp_path):
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Switchboard HQ")
        text = guild.add_text_channel("general")
        lounge = guild.add_voice_channel("Lounge")
        stage = guild.add_voice_channel("Back room")
        admin = fake.add_member(
            guild, "carol", roles=[guild.add_role("mods", Permission.MANAGE_CHANNELS)]
        )
        alice = fake.add_member(guild, "alice")
        config = write_config(tmp_path / "config.toml", guild.id)
        yield fake, guild, text, lounge, stage, admin, alice, config


async def test_link_then_join_bridges_the_channel(world):
    fake, guild, text, lounge, _, admin, alice, config = world
    async with running(fake, config) as service:
        linked = await fake.send_interaction(
            guild, text, admin, "bridge", {"channel": lounge, "room": "lobby"}, subcommand="link"
        )
        assert "Linked" in await linked.final_text() and "lobby" in await linked.final_text()
        await fake.user_joins_voice(guild, alice, lounge)
        joined = await fake.send_interaction(guild, text, alice, "join")
        assert (await joined.response()).deferred
        assert "into room **lobby**" in await joined.final_text(timeout=20)
        active = service.bridges.active(guild.id)
        assert active is not None and active.channel_id == lounge.id and active.room == "lobby"
        assert active.voice.is_connected()
        members = await service.directory.members("lobby")
        assert [m.member_id for m in members] == [f"discord:{guild.id}:{lounge.id}"]
        exported = service.metrics.render().decode()
        assert "switchboard_bridges 1.0" in exported
        assert "switchboard_discord_frames_sent_total" in exported
        assert "switchboard_media_peer_recoveries_total 0.0" in exported

        # The SFU forgets the bridge's session: it is rebuilt, counted and timed. (A bridge
        # that carries nothing has nothing to lose: give it a speaker first.)
        active.bridge.speaker("probe").push(OPUS_SILENCE_FRAME)
        await wait_until(lambda: active.bridge.peer.state is PeerState.CONNECTED)
        assert service.sfu is not None
        registry = service.sfu.registry
        await registry.discard(registry.get(active.bridge.peer.session_id))
        await wait_until(lambda: active.bridge.peer.recoveries == 1)
        exported = service.metrics.render().decode()
        assert "switchboard_media_peer_recoveries_total 1.0" in exported
        assert "switchboard_peer_recovery_seconds_count 1.0" in exported
        status = await fake.send_interaction(guild, text, alice, "status")
        assert "Room **lobby**" in await status.final_text()
        left = await fake.send_interaction(guild, text, alice, "leave")
        assert "Left" in await left.final_text(timeout=20)
        assert service.bridges.active(guild.id) is None
        assert await service.directory.members("lobby") == []
    assert fake.interactions.violations == []


async def test_redis_url_shares_the_room_directory_with_other_processes(world, redis_server):
    fake, guild, text, lounge, _, admin, alice, config = world
    # Another process on the same Redis (default key prefix, as deployments share it).
    other = RedisDirectory(redis_server.url)
    await other.start()
    try:
        async with running(fake, config, {"REDIS_URL": redis_server.url}) as service:
            assert isinstance(service.directory, RedisDirectory)
            linked = await fake.send_interaction(
                guild, text, admin, "bridge", {"channel": lounge, "room": "shared"},
                subcommand="link",
            )  # fmt: skip
            assert "Linked" in await linked.final_text()
            await fake.user_joins_voice(guild, alice, lounge)
            joined = await fake.send_interaction(guild, text, alice, "join")
            assert "into room **shared**" in await joined.final_text(timeout=20)
            members = await other.members("shared")
            assert [m.member_id for m in members] == [f"discord:{guild.id}:{lounge.id}"]
            assert members[0].kind is MemberKind.DISCORD
        # Stopping the service left the room (announced), it did not wait to expire.
        assert await other.members("shared") == []
    finally:
        await other.stop()


async def test_an_unreachable_redis_url_stops_the_start_without_showing_it(world):
    fake, *_, config = world
    port = free_port()  # nothing listens there
    url = f"redis://:redis-password-sentinel@127.0.0.1:{port}/0"
    with pytest.raises(StartupError) as caught:
        async with running(fake, config, {"REDIS_URL": url}):
            pass
    assert "env REDIS_URL" in str(caught.value)
    assert "redis-password-sentinel" not in str(caught.value)


async def test_join_explains_what_to_do(world):
    fake, guild, text, lounge, _, _, alice, config = world
    async with running(fake, config):
        outside = await fake.send_interaction(guild, text, alice, "join")
        reply = await outside.response()
        assert reply.ephemeral and "Join a voice channel first" in reply.text()
        await fake.user_joins_voice(guild, alice, lounge)
        unmapped = await fake.send_interaction(guild, text, alice, "join")
        said = await unmapped.final_text()
        assert "is not linked to a room" in said and "/bridge link" in said
        nothing = await fake.send_interaction(guild, text, alice, "leave")
        assert "Nothing is bridged" in await nothing.final_text()
    assert fake.interactions.violations == []


async def test_join_and_leave_keep_errors_private_and_announce_success(world):
    fake, guild, text, lounge, stage, _, alice, config = world
    bob = fake.add_member(guild, "bob")
    async with running(fake, config) as service:
        await service.store.link(guild.id, lounge.id, "lobby", "manual", "test")
        await service.store.link(guild.id, stage.id, "backstage", "manual", "test")
        await fake.user_joins_voice(guild, alice, lounge)
        joined = await fake.send_interaction(guild, text, alice, "join")
        deferral = await joined.response()
        assert deferral.deferred and deferral.ephemeral
        assert "into room **lobby**" in await joined.final_text(timeout=20)
        said = [r for r in joined.replies if r.text()]
        assert len(said) == 1 and not said[0].ephemeral, "success is announced to the channel"

        await fake.user_joins_voice(guild, bob, stage)
        busy = await fake.send_interaction(guild, text, bob, "join")
        assert "already bridging" in await busy.final_text()
        assert all(r.ephemeral for r in busy.replies), "an error reply must stay private"

        refused = await fake.send_interaction(guild, text, bob, "leave")
        assert "Only people in" in await refused.final_text()
        assert all(r.ephemeral for r in refused.replies)
        assert service.bridges.active(guild.id) is not None

        left = await fake.send_interaction(guild, text, alice, "leave")
        assert "Left" in await left.final_text(timeout=20)
        assert (await left.response()).ephemeral
        assert not next(r for r in left.replies if r.text()).ephemeral
        assert service.bridges.active(guild.id) is None
    assert fake.interactions.violations == []


async def test_non_admin_cannot_link_and_bad_room_is_explained(world):
    fake, guild, text, lounge, _, admin, alice, config = world
    async with running(fake, config) as service:
        denied = await fake.send_interaction(
            guild, text, alice, "bridge", {"channel": lounge, "room": "lobby"}, subcommand="link"
        )
        assert "Manage Channels" in await denied.final_text()
        assert await service.store.get(guild.id, lounge.id) is None
        bad = await fake.send_interaction(
            guild,
            text,
            admin,
            "bridge",
            {"channel": lounge, "room": "Bad Room!"},
            subcommand="link",
        )
        assert "not a valid room name" in await bad.final_text()


async def test_bridge_list_survives_a_restart_and_shows_static_bridges(world, tmp_path):
    fake, guild, text, lounge, stage, admin, _, config = world
    config = write_config(
        config,
        guild.id,
        f"""
[[bridges]]
guild_id = {guild.id}
channel_id = {stage.id}
room = "backstage"
mode = "auto"
""",
    )
    async with running(fake, config):
        linked = await fake.send_interaction(
            guild,
            text,
            admin,
            "bridge",
            {"channel": lounge, "room": "lobby", "mode": "manual"},
            subcommand="link",
        )
        await linked.final_text()
    async with running(fake, config):
        listed = await fake.send_interaction(guild, text, admin, "bridge", subcommand="list")
        said = await listed.final_text()
        assert f"<#{lounge.id}> → **lobby** (manual)" in said
        assert f"<#{stage.id}> → **backstage** (auto) · from config" in said
        unlinked = await fake.send_interaction(
            guild, text, admin, "bridge", {"channel": lounge}, subcommand="unlink"
        )
        assert "Unlinked" in await unlinked.final_text()
        again = await fake.send_interaction(guild, text, admin, "bridge", subcommand="list")
        assert "lobby" not in await again.final_text()


async def test_auto_mode_joins_when_someone_arrives_and_leaves_when_empty(world):
    fake, guild, text, lounge, _, admin, alice, config = world
    async with running(fake, config) as service:
        linked = await fake.send_interaction(
            guild,
            text,
            admin,
            "bridge",
            {"channel": lounge, "room": "lobby", "mode": "auto"},
            subcommand="link",
        )
        await linked.final_text()
        await fake.user_joins_voice(guild, alice, lounge)
        await wait_until(lambda: service.bridges.active(guild.id) is not None, 20)
        active = service.bridges.active(guild.id)
        await wait_until(lambda: active.voice.is_connected(), 20)
        await fake.user_leaves_voice(guild, alice)
        left_at = time.monotonic()
        await wait_until(lambda: service.bridges.active(guild.id) is None, 10)
        assert time.monotonic() - left_at >= 0.4  # waited out auto_leave_delay_s


async def test_sigterm_leaves_voice_and_exits_within_ten_seconds(world):
    fake, guild, text, lounge, _, _, alice, config = world
    settings = load_settings(config, environ={"DISCORD_TOKEN": fake.token})
    with fake.patch_discord():
        service = Service(settings, link_factory=VoiceLink, connector_factory=fake.connector)
        runner = asyncio.create_task(service.run_until_signalled())
        await wait_until(lambda: service.bot is not None and service.bot.is_ready(), 15)
        await service.store.link(guild.id, lounge.id, "lobby", "manual", "test")
        await fake.user_joins_voice(guild, alice, lounge)
        joined = await fake.send_interaction(guild, text, alice, "join")
        assert "lobby" in await joined.final_text(timeout=20)
        sessions_before = len(service.sfu.registry)
        assert sessions_before >= 1
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(runner, 10)
        assert time.monotonic() - started < 10
        assert service.bridges.active(guild.id) is None
        assert len(service.sfu.registry) == 0
