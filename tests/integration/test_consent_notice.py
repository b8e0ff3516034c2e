"""The consent notice: while a channel is bridged, its text chat says who can hear it (the
room, the other servers' channels, the web listeners), kept up to date by edits; when the
bridge goes down it says so. Two guilds through real discord.py and the fake Discord."""

from __future__ import annotations

import pytest

from bot import presence as presence_module
from bot.web import Role
from tests.integration.test_bot import running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_notice_appears_on_bridging_and_follows_listeners(two_guilds, monkeypatch) -> None:
    monkeypatch.setattr(presence_module, "EDIT_INTERVAL_S", 0.2)
    fake, ((a, a_text, a_voice, _, a_user), (b, b_text, b_voice, _, b_user)), config = two_guilds
    async with running(fake, config) as service:
        store = service.store
        await store.link(a.id, a_voice.id, "lobby", "manual", "test")
        code = await store.create_share_code("lobby", "test")
        await store.redeem_share_code(code.code, b.id, "test")
        await store.link(b.id, b_voice.id, "lobby", "manual", "test")

        def notice_in(channel, *needles):
            def matches(message) -> bool:
                return message["channel_id"] == str(channel.id) and all(
                    n in message["content"] for n in needles
                )

            return fake.rest.channel_message_where(matches, timeout=15)

        await fake.user_joins_voice(a, a_user, a_voice)
        joined = await fake.send_interaction(a, a_text, a_user, "join")
        assert "lobby" in await joined.final_text(timeout=30)
        first = await notice_in(
            a_voice, "room **lobby**", "no other Discord channel", "0 web listeners"
        )
        assert "heard outside this server" in first["content"]

        await fake.user_joins_voice(b, b_user, b_voice)
        joined = await fake.send_interaction(b, b_text, b_user, "join")
        assert "lobby" in await joined.final_text(timeout=30)
        await notice_in(a_voice, "#Lounge (Guests)", "0 web listeners")
        await notice_in(b_voice, "#Lounge (Owners)")

        registry = service.web.registry
        zoe, _ = await registry.join("lobby", Role.LISTENER, "Zoe", 600)
        await notice_in(a_voice, "1 web listener")
        max_, _ = await registry.join("lobby", Role.SPEAKER, "Max", 600)
        await notice_in(a_voice, "2 web listeners")
        await registry.remove(zoe.participant_id, "left")
        await registry.remove(max_.participant_id, "left")
        await notice_in(a_voice, "0 web listeners", "#Lounge (Guests)")
        # One message per channel, edited in place.
        in_a = [m for m in fake.rest.channel_messages if m["channel_id"] == str(a_voice.id)]
        assert len(in_a) == 1 and in_a[0]["edited_timestamp"] is not None

        left = await fake.send_interaction(b, b_text, b_user, "leave")
        assert "Left" in await left.final_text(timeout=20)
        await notice_in(b_voice, "no longer bridged")
        await notice_in(a_voice, "no other Discord channel")
    assert fake.rest.unhandled == []
