"""Rooms belong to a server: two guilds through real discord.py and the fake Discord. A link
into another server's room needs the owner's one-time share code; the owner removes a server
and its bridge stops at once. Room names autocomplete to the rooms a server may use."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest

from media.audio import OPUS_SILENCE_FRAME
from tests.fakes.discord.audio import decode_opus, dominant_frequency, encode_tone, load_libopus
from tests.integration.test_bot import running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TONE_HZ = 440
FREQUENCY_TOLERANCE_HZ = 30


def stage(guild):
    return next(c for c in guild.channels.values() if c.name == "Stage")


async def link(fake, guild, text, admin, channel, room, **extra):
    handle = await fake.send_interaction(
        guild,
        text,
        admin,
        "bridge",
        {"channel": channel, "room": room, **extra},
        subcommand="link",
    )
    return await handle.final_text()


async def heard_tone(fake, guild, frames: int = 25) -> float:
    """The dominant frequency of what the bot plays into `guild`'s voice channel."""
    session = await fake.bot_voice(guild)
    session.drain_frames()
    packets: list[bytes] = []
    async with asyncio.timeout(15):
        while len(packets) < frames:
            frame = await session.next_frame()
            if frame.error is None and frame.opus != OPUS_SILENCE_FRAME:
                packets.append(frame.opus)
    return dominant_frequency(decode_opus(packets))


async def test_a_foreign_room_needs_the_owners_share_code_and_the_owner_can_remove_it(two_guilds):
    load_libopus()
    fake, ((a, a_text, a_voice, a_admin, a_user), (b, b_text, b_voice, b_admin, b_user)), config = (
        two_guilds
    )
    async with running(fake, config) as service:
        assert "Linked" in await link(fake, a, a_text, a_admin, a_voice, "lobby")
        assert "Linked" in await link(fake, a, a_text, a_admin, stage(a), "secret")

        refused = await link(fake, b, b_text, b_admin, b_voice, "lobby")
        assert "belongs to another server" in refused and "share code" in refused
        assert await service.store.get(b.id, b_voice.id) is None
        invite = await fake.send_interaction(
            b, b_text, b_admin, "bridge", {"room": "lobby"}, subcommand="invite"
        )
        assert "belongs to another server" in await invite.final_text()
        wrong = await link(fake, b, b_text, b_admin, b_voice, "lobby", share_code="guessed-code")
        assert "not accepted" in wrong and await service.store.get(b.id, b_voice.id) is None

        # Only the owner shares; the code comes back privately.
        not_owner = await fake.send_interaction(
            b, b_text, b_admin, "bridge", {"room": "lobby"}, subcommand="share"
        )
        assert "only its admins" in await not_owner.final_text()
        shared = await fake.send_interaction(
            a, a_text, a_admin, "bridge", {"room": "lobby"}, subcommand="share"
        )
        said = await shared.final_text()
        assert (await shared.response()).ephemeral
        code = re.search(r"`([A-Za-z0-9_-]{12,})`", said).group(1)
        assert "Linked" in await link(fake, b, b_text, b_admin, b_voice, "lobby", share_code=code)
        again = await link(fake, b, b_text, b_admin, stage(b), "secret", share_code=code)
        assert "already been used" in again

        # Autocomplete offers B the shared room and never A's other room.
        typing = await fake.send_interaction(
            b, b_text, b_admin, "bridge", {"room": ""}, subcommand="invite", focused="room"
        )
        assert [c["value"] for c in (await typing.response()).choices] == ["lobby"]
        typing = await fake.send_interaction(
            a, a_text, a_admin, "bridge", {"room": "se"}, subcommand="link", focused="room"
        )
        assert [c["value"] for c in (await typing.response()).choices] == ["secret"]

        # Both bridges up: A's speaker is heard in B's channel.
        users = {}
        for guild, voice, user, text in (
            (a, a_voice, a_user, a_text),
            (b, b_voice, b_user, b_text),
        ):
            users[guild.id] = await fake.user_joins_voice(guild, user, voice)
            joined = await fake.send_interaction(guild, text, user, "join")
            assert "into room **lobby**" in await joined.final_text(timeout=30)
        tone = encode_tone(TONE_HZ, 50)
        talker = asyncio.create_task(users[a.id].play(itertools.cycle(tone)))
        try:
            assert abs(await heard_tone(fake, b) - TONE_HZ) < FREQUENCY_TOLERANCE_HZ
        finally:
            talker.cancel()
            await asyncio.gather(talker, return_exceptions=True)

        listed = await fake.send_interaction(
            a, a_text, a_admin, "bridge", {"room": "lobby"}, subcommand="shares"
        )
        assert f"`{b.id}`" in await listed.final_text()
        started = time.monotonic()
        removed = await fake.send_interaction(
            a,
            a_text,
            a_admin,
            "bridge",
            {"room": "lobby", "remove": str(b.id)},
            subcommand="shares",
        )
        assert "1 channel(s) unlinked" in await removed.final_text()
        b_member = f"discord:{b.id}:{b_voice.id}"
        async with asyncio.timeout(2):
            while service.bridges.active(b.id) is not None or b_member in {
                m.member_id for m in await service.directory.members("lobby")
            }:
                await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        assert await service.store.get(b.id, b_voice.id) is None
        assert not await service.store.may_use_room("lobby", b.id)
        assert service.bridges.active(a.id) is not None, "the owner's bridge goes on"
        # B can no longer come back without a new code.
        assert "belongs to another server" in await link(fake, b, b_text, b_admin, b_voice, "lobby")
    assert fake.interactions.violations == []
