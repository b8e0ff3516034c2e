"""Plain aiortc clients of the Realtime API, written the way Cloudflare's examples are."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

from media.aiortc_compat import enlarge_receive_buffers, install_tap


@dataclass
class Api:
    """Bare HTTP calls, so tests see exactly what the server answers."""

    base_url: str
    app_id: str
    secret: str
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=20))

    def url(self, path: str) -> str:
        return f"{self.base_url}/apps/{self.app_id}{path}"

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(
            method, self.url(path), json=body, headers={"Authorization": f"Bearer {self.secret}"}
        )

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.call(method, path, body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def aclose(self) -> None:
        await self.http.aclose()


MAX_KEPT_PACKETS = 6000
"""Per mid: two minutes of 20 ms packets."""


class Client:
    """One session and its RTCPeerConnection.

    With `tap=True` received RTP is not decoded: packets are kept per mid in `received`
    (for byte-exact checks), with their arrival times (`time.monotonic()`) in `arrived_at`.
    """

    def __init__(self, api: Api, tap: bool = False) -> None:
        self.api = api
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.session_id = ""
        self.tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self.received: dict[str, list[RtpPacket]] = defaultdict(list)
        self.arrived_at: dict[str, list[float]] = defaultdict(list)
        self._tap = tap
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.put_nowait(track)
        if not self._tap:
            return
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                install_tap(transceiver.receiver, self._keeper(transceiver))

    def _keeper(self, transceiver: RTCRtpTransceiver):
        async def keep(packet: RtpPacket, arrival_ms: int) -> None:
            if len(self.received[transceiver.mid]) < MAX_KEPT_PACKETS:
                self.received[transceiver.mid].append(packet)
                self.arrived_at[transceiver.mid].append(time.monotonic())

        return keep

    async def open(self) -> None:
        self.session_id = (await self.api.ok("POST", "/sessions/new"))["sessionId"]

    async def push(self, track: MediaStreamTrack, name: str) -> dict[str, Any]:
        return await self.push_many([(track, name)])

    async def push_many(self, tracks: list[tuple[MediaStreamTrack, str]]) -> dict[str, Any]:
        transceivers = [self.pc.addTransceiver(t, direction="sendonly") for t, _ in tracks]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {
            "sessionDescription": {"type": "offer", "sdp": self.pc.localDescription.sdp},
            "tracks": [
                {"location": "local", "mid": t.mid, "trackName": name}
                for t, (_, name) in zip(transceivers, tracks, strict=True)
            ],
        }
        result = await self.api.ok("POST", f"/sessions/{self.session_id}/tracks/new", body)
        answer = result["sessionDescription"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        enlarge_receive_buffers(self.pc)
        return result

    async def pull(self, tracks: list[tuple[str, str]]) -> dict[str, Any]:
        body = {
            "tracks": [
                {"location": "remote", "sessionId": sid, "trackName": name} for sid, name in tracks
            ]
        }
        result = await self.api.ok("POST", f"/sessions/{self.session_id}/tracks/new", body)
        if result.get("requiresImmediateRenegotiation"):
            await self.answer(result["sessionDescription"])
        return result

    async def answer(self, offer: dict[str, str]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # Up to 64 tracks arrive here while the same loop runs the SFU and the publisher.
        enlarge_receive_buffers(self.pc)
        await self.api.ok(
            "PUT",
            f"/sessions/{self.session_id}/renegotiate",
            {"sessionDescription": {"type": "answer", "sdp": self.pc.localDescription.sdp}},
        )

    async def wait_sending(self, name: str, timeout: float = 10.0) -> None:
        """Until the SFU reports the publication active and receiving (pull succeeds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            state = await self.api.ok("GET", f"/sessions/{self.session_id}")
            if any(t["trackName"] == name and t["status"] == "active" for t in state["tracks"]):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"track {name} never became active")

    async def close(self) -> None:
        await self.pc.close()
