"""Invites you can manage, through the real service, the fake Discord and HTTP on loopback:
each `/bridge invite` is stored with a cap on the people in through it; `/bridge invites`
lists and revokes (its participants go at once, also after a restart); a rejoin credential
works once; one abused invite leaves the room open to others."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, WSMsgType

from bot.service import Service
from tests.fakes.discord import FakeDiscord, Permission
from tests.integration.test_bot import running as started
from tests.integration.test_bot import write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = secrets.token_urlsafe(48)


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, config: Path) -> AsyncIterator[Service]:
    """The service with a fixed invite secret, so links outlive a restart."""
    async with started(fake, config, {"SWITCHBOARD_INVITE_SECRET": SECRET}) as service:
        yield service


@pytest.fixture
async def world(tmp_path):
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Switchboard HQ")
        text = guild.add_text_channel("general")
        lounge = guild.add_voice_channel("Lounge")
        admin = fake.add_member(
            guild, "carol", roles=[guild.add_role("mods", Permission.MANAGE_CHANNELS)]
        )
        yield fake, guild, text, lounge, admin, write_config(tmp_path / "config.toml", guild.id)


async def make_invite(fake, guild, text, admin, **options: Any) -> str:
    handle = await fake.send_interaction(
        guild, text, admin, "bridge", {"room": "lobby", **options}, subcommand="invite"
    )
    reply = await handle.response()
    assert reply.ephemeral
    return reply.embeds[0]["url"].split("#t=", 1)[1]


async def join(base: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/api/rooms/lobby/join", json=body)


async def test_cap_rejoin_once_revoke_and_restart(world) -> None:
    fake, guild, text, lounge, admin, config = world
    async with running(fake, config) as service:
        await service.store.link(guild.id, lounge.id, "lobby", "manual", str(admin.user.id))
        base = f"http://127.0.0.1:{service.http.port}"
        leaked = await make_invite(fake, guild, text, admin, people=2)
        own = await make_invite(fake, guild, text, admin, role="listener")
        record = await service.store.get_invite(service.web.signer.verify_invite(leaked).jti)
        assert record is not None and record.max_participants == 2

        # One invite holds at most its cap, however hard a script tries...
        first = await join(base, {"token": leaked, "name": "One"})
        second = await join(base, {"token": leaked, "name": "Two"})
        assert first.status_code == second.status_code == 200
        flood = await asyncio.gather(*(join(base, {"token": leaked}) for _ in range(20)))
        assert {r.status_code for r in flood} <= {409, 429}
        assert {r.json()["error"]["code"] for r in flood if r.status_code == 409} == {"invite_full"}
        assert len(service.web.registry.by_invite(record.id)) == 2
        # ...and the room stays open to someone with another invite.
        speaker = await join(base, {"token": own, "name": "Real"})
        assert speaker.status_code == 200, speaker.text

        # A rejoin takes the place of its participant (so it fits the cap), once.
        credential = first.json()["credential"]
        rejoined = await join(base, {"credential": credential, "name": "One"})
        assert rejoined.status_code == 200, rejoined.text
        again = await join(base, {"credential": credential, "name": "One"})
        assert again.status_code == 401 and again.json()["error"]["code"] == "credential_spent"
        assert len(service.web.registry.by_invite(record.id)) == 2

        # The listing shows both invites; revoking the leaked one removes its people at once.
        listed = await fake.send_interaction(
            guild, text, admin, "bridge", {"room": "lobby"}, subcommand="invites"
        )
        said = await listed.final_text()
        assert f"`{record.id[:8]}` speaker" in said and "2/2 in" in said and "listener" in said
        ids_before = {p.participant_id for p in service.web.registry.by_invite(record.id)}
        started = time.monotonic()
        revoked = await fake.send_interaction(
            guild,
            text,
            admin,
            "bridge",
            {"room": "lobby", "revoke": record.id[:8]},
            subcommand="invites",
        )
        assert "2 participant(s) were removed" in await revoked.final_text()
        members = {m.member_id for m in await service.directory.members("lobby")}
        assert time.monotonic() - started < 2.0
        assert not members & ids_before and service.web.registry.by_invite(record.id) == []
        assert len(members) == 1, "the other invite's speaker stays"
        refused = await join(base, {"token": leaked})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invite_revoked"
        rejoin = await join(base, {"credential": rejoined.json()["credential"]})
        assert rejoin.json()["error"]["code"] == "invite_revoked"

    async with running(fake, config) as service:
        base = f"http://127.0.0.1:{service.http.port}"
        refused = await join(base, {"token": leaked})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invite_revoked"
        assert (await join(base, {"token": own})).status_code == 200
    assert fake.interactions.violations == []


async def test_a_revoked_invites_page_is_told_and_its_socket_closed(world) -> None:
    fake, guild, text, lounge, admin, config = world
    async with running(fake, config) as service:
        await service.store.link(guild.id, lounge.id, "lobby", "manual", str(admin.user.id))
        base = f"http://127.0.0.1:{service.http.port}"
        token = await make_invite(fake, guild, text, admin)
        joined = (await join(base, {"token": token})).json()
        async with (
            ClientSession() as http,
            http.ws_connect(
                f"{base}/api/participants/{joined['participantId']}/events",
                headers={"Origin": service.web.origin},
            ) as socket,
        ):
            await socket.send_json({"type": "auth", "credential": joined["credential"]})
            await socket.receive_json(timeout=5)  # the snapshot
            invite_id = service.web.signer.verify_invite(token).jti
            revoked = await fake.send_interaction(
                guild,
                text,
                admin,
                "bridge",
                {"room": "lobby", "revoke": invite_id[:8]},
                subcommand="invites",
            )
            await revoked.final_text()
            async with asyncio.timeout(2):
                while (message := await socket.receive()).type is WSMsgType.TEXT:
                    pass
            assert message.type is WSMsgType.CLOSE
            assert (message.data, message.extra) == (4404, "invite revoked")
