"""Moderating web participants from Discord (`/web ...`) through the real service, the fake
Discord and plain aiortc participants on loopback: mute stops the microphone being forwarded
(and every page is told), kick removes for good, a ban keeps a name out; only admins or the
moderator role may do it. `/leave`'s rule is in test_bot.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.fakes.discord import FakeDiscord, Permission
from tests.integration.test_bot import write_config
from tests.integration.test_invite_management import make_invite, running
from tests.support.signals import ToneTrack, collect_pcm, dominant_frequency

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TONE_HZ = 440.0


class WebClient:
    """One page's worth of HTTP and events socket, without the page."""

    def __init__(self, http: ClientSession, base: str, origin: str) -> None:
        self.http, self.base, self.origin = http, base, origin
        self.id = self.credential = ""
        self.events: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def join(self, token: str, name: str) -> None:
        async with self.http.post(
            f"{self.base}/api/rooms/lobby/join", json={"token": token, "name": name}
        ) as response:
            body = await response.json()
            assert response.status == 200, body
        self.id, self.credential = body["participantId"], body["credential"]
        socket = await self.http.ws_connect(
            f"{self.base}/api/participants/{self.id}/events", headers={"Origin": self.origin}
        )
        await socket.send_json({"type": "auth", "credential": self.credential})
        self.events.append(await socket.receive_json(timeout=5))
        self._reader = asyncio.create_task(self._read(socket))

    async def _read(self, socket) -> None:
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                self.events.append(message.json())
        self.closed = (socket.close_code, "")

    async def call(self, action: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            f"{self.base}/api/participants/{self.id}/{action}",
            json=body or {},
            headers={"Authorization": f"Bearer {self.credential}"},
        ) as response:
            return response.status, await response.json()

    async def rejoin(self) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            f"{self.base}/api/rooms/lobby/join", json={"credential": self.credential}
        ) as response:
            return response.status, await response.json()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def service_world(tmp_path) -> AsyncIterator[Any]:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Switchboard HQ")
        text = guild.add_text_channel("general")
        lounge = guild.add_voice_channel("Lounge")
        admin = fake.add_member(
            guild, "carol", roles=[guild.add_role("admins", Permission.MANAGE_CHANNELS)]
        )
        mods = guild.add_role("moderators")
        mod = fake.add_member(guild, "mo", roles=[mods])
        someone = fake.add_member(guild, "eve")
        config = write_config(tmp_path / "config.toml", guild.id)
        config.write_text(
            config.read_text().replace("[discord]\n", f"[discord]\nmoderator_role_id = {mods.id}\n")
        )
        async with running(fake, config) as service, ClientSession() as http:
            await service.store.link(guild.id, lounge.id, "lobby", "manual", str(admin.user.id))
            base = f"http://127.0.0.1:{service.http.port}"
            yield fake, guild, text, admin, mod, someone, service, http, base


async def command(fake, guild, text, user, name: str, **options: Any) -> str:
    handle = await fake.send_interaction(guild, text, user, "web", options, subcommand=name)
    return await handle.final_text()


async def test_mute_kick_and_ban_a_plain_aiortc_participant(tmp_path) -> None:
    async with service_world(tmp_path) as (
        fake,
        guild,
        text,
        admin,
        mod,
        someone,
        service,
        http,
        base,
    ):
        speaker_token = await make_invite(fake, guild, text, admin)
        listener_token = await make_invite(fake, guild, text, admin, role="listener")
        origin = service.web.origin
        ada, bob = WebClient(http, base, origin), WebClient(http, base, origin)
        peers: list[RTCPeerConnection] = []
        try:
            await ada.join(speaker_token, "Ada")
            await bob.join(listener_token, "Bob")
            # Ada publishes a tone; Bob pulls it and hears it.
            talker = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            peers.append(talker)
            sending = talker.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
            await talker.setLocalDescription(await talker.createOffer())
            status, body = await ada.call(
                "publish",
                {
                    "sessionDescription": {"type": "offer", "sdp": talker.localDescription.sdp},
                    "mid": sending.mid,
                },
            )
            assert status == 200, body
            await talker.setRemoteDescription(RTCSessionDescription(**body["sessionDescription"]))
            [member] = [
                m for m in await service.directory.members("lobby") if m.member_id == ada.id
            ]
            locator = {"sessionId": member.tracks[0].session_id, "trackName": "mic"}
            async with asyncio.timeout(10):
                while True:
                    status, pulled = await bob.call("pull", {"tracks": [locator]})
                    if pulled["tracks"][0].get("error", {}).get("code") != "not_found_track_error":
                        break
                    await asyncio.sleep(0.05)
            assert status == 200 and pulled["sessionDescription"]["type"] == "offer", pulled
            listener = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            peers.append(listener)
            tracks: asyncio.Queue = asyncio.Queue()
            listener.on("track", tracks.put_nowait)
            await listener.setRemoteDescription(
                RTCSessionDescription(**pulled["sessionDescription"])
            )
            await listener.setLocalDescription(await listener.createAnswer())
            status, _ = await bob.call(
                "answer",
                {"sessionDescription": {"type": "answer", "sdp": listener.localDescription.sdp}},
            )
            assert status == 200
            heard = await asyncio.wait_for(tracks.get(), 10)
            pcm = await asyncio.wait_for(collect_pcm(heard, 1.0), 15)
            assert abs(dominant_frequency(pcm[len(pcm) // 2 :]) - TONE_HZ) < 5

            # Only admins and the moderator role moderate.
            denied = await command(fake, guild, text, someone, "mute", participant=ada.id)
            assert "moderator role" in denied
            typing = await fake.send_interaction(
                guild,
                text,
                mod,
                "web",
                {"participant": "ad"},
                subcommand="mute",
                focused="participant",
            )
            assert [c["value"] for c in (await typing.response()).choices] == [ada.id]
            listed = await command(fake, guild, text, mod, "list")
            assert "**Ada** in **lobby** (speaker)" in listed and "**Bob**" in listed

            # Mute: the SFU stops forwarding Ada's microphone; Bob's page is told.
            said = await command(fake, guild, text, mod, "mute", participant=ada.id)
            assert "Muted **Ada**" in said
            muted_at = time.monotonic()
            await until(
                lambda: {"type": "moderation", "memberId": ada.id, "muted": True} in bob.events
            )
            assert any(
                e.get("type") == "track_removed" and e["memberId"] == ada.id for e in bob.events
            )
            with pytest.raises(TimeoutError):  # no audio arrives any more
                async with asyncio.timeout(1.5):
                    while True:
                        frame = await heard.recv()
                        if time.monotonic() - muted_at > 0.5:
                            level = float(np.abs(frame.to_ndarray()).mean())
                            assert level < 50, "Ada is still heard after the mute"
            again = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            peers.append(again)
            retry = again.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
            await again.setLocalDescription(await again.createOffer())
            status, body = await ada.call(
                "publish",
                {
                    "sessionDescription": {"type": "offer", "sdp": again.localDescription.sdp},
                    "mid": retry.mid,
                },
            )
            assert (status, body["error"]["code"]) == (403, "muted_by_moderator")
            assert "Ada" in await command(fake, guild, text, admin, "list")  # shown as muted
            assert ", muted)" in await command(fake, guild, text, admin, "list")

            # Kick: removed, told with 4403, and its credential cannot bring it back.
            said = await command(fake, guild, text, admin, "kick", participant=ada.id)
            assert "Removed **Ada**" in said
            await until(lambda: ada.closed is not None)
            assert ada.closed[0] == 4403
            status, body = await ada.rejoin()
            assert (status, body["error"]["code"]) == (403, "kicked")

            # Ban a name: Bob goes, and his name cannot join again.
            said = await command(fake, guild, text, admin, "ban", participant=bob.id)
            assert "Banned the name **Bob**" in said and "(1 removed)" in said
            await until(lambda: bob.closed is not None)
            async with http.post(
                f"{base}/api/rooms/lobby/join", json={"token": listener_token, "name": "bob"}
            ) as response:
                assert (
                    response.status == 403 and (await response.json())["error"]["code"] == "banned"
                )
            assert await service.directory.members("lobby") == []
        finally:
            await asyncio.gather(ada.close(), bob.close(), *(pc.close() for pc in peers))
        assert fake.interactions.violations == []
