"""What does not move a client's transport (docs/webrtc-interop.md §2.3).

Only a change of the first mid of the client's BUNDLE group moves it. An aiortc client that
closes its first track keeps the m-line (inactive, live port): nothing moves and the session
goes on. Browsers that do move are followed; tests/e2e/test_sfu_chromium.py shows that.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiortc import sdp as aiortc_sdp

from media.sfu.session import SessionState
from tests.support.rtc import Client
from tests.support.signals import (
    ToneTrack,
    decode_opus,
    dominant_frequency,
    longest_gap_s,
    longest_media_gap_s,
    rms_dbfs,
)

from .test_sfu_forwarding import pull_all
from .test_sfu_lifecycle import close_with_offer

PAUSE_ALLOWANCE_S = 0.1
"""How much more audio than the renegotiation lasted a surviving track may miss."""


async def wait_packets(client: Client, mid: str, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(client.received[mid]) < count:
        assert time.monotonic() < deadline, f"only {len(client.received[mid])} packets on {mid}"
        await asyncio.sleep(0.02)


async def tone_after(client: Client, mid: str, index: int, frames: int = 50) -> tuple[float, float]:
    """(dominant Hz, dBFS) of `frames` tapped packets from packet `index` on."""
    await wait_packets(client, mid, index + frames)
    pcm = decode_opus(p.payload for p in client.received[mid][index : index + frames])
    return dominant_frequency(pcm), rms_dbfs(pcm)


@pytest.mark.timeout(60)
async def test_closing_the_first_track_of_an_aiortc_client_keeps_the_session(sfu, api):
    publisher, listener = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await listener.open()
        pushed = await publisher.push_many([(ToneTrack(440), "A"), (ToneTrack(660), "B")])
        a_pushed, _ = (t["mid"] for t in pushed["tracks"])
        pulled = await pull_all(listener, publisher.session_id, ["A", "B"])
        a, b = (t["mid"] for t in pulled["tracks"])
        await wait_packets(listener, b, 50)
        session = sfu.registry.get(publisher.session_id)
        connection = session.pc

        started = time.monotonic()
        closed = await close_with_offer(publisher, a_pushed)  # the BUNDLE tag, kept inactive
        renegotiation_s = time.monotonic() - started
        assert closed["tracks"] == [{"mid": a_pushed, "trackName": "A"}]
        answer = aiortc_sdp.SessionDescription.parse(closed["sessionDescription"]["sdp"])
        assert answer.group[0].items[0] == a_pushed  # the tag in force did not change
        assert session.pc is connection and session.state is SessionState.CONNECTED

        after_close = len(listener.received[b])
        await wait_packets(listener, b, after_close + 100)
        # Nothing moved, so nothing of B may be missing: every packet arrived, in order.
        packets = listener.received[b]
        assert all(
            (q.sequence_number - p.sequence_number) & 0xFFFF == 1
            for p, q in itertools.pairwise(packets)
        )
        missing = longest_media_gap_s(packets)
        pause = longest_gap_s(listener.arrived_at[b])
        print(
            f"renegotiation {renegotiation_s * 1000:.0f} ms; B: longest missing audio "
            f"{missing * 1000:.0f} ms, longest pause between arrivals {pause * 1000:.0f} ms"
        )
        assert missing <= renegotiation_s + PAUSE_ALLOWANCE_S, (missing, renegotiation_s)
        frequency, level = await tone_after(listener, b, after_close)
        assert abs(frequency - 660) < 10 and level > -25, (frequency, level)
        count = len(listener.received[a])
        await asyncio.sleep(0.4)
        assert len(listener.received[a]) <= count + 1  # one may be in flight

        # The session takes later pushes and pulls as before.
        await publisher.push(ToneTrack(880), "C")
        [c] = [t["mid"] for t in (await pull_all(listener, publisher.session_id, ["C"]))["tracks"]]
        frequency, level = await tone_after(listener, c, 10)
        assert abs(frequency - 880) < 10 and level > -25, (frequency, level)
        state = await api.ok("GET", f"/sessions/{publisher.session_id}")
        assert {t["trackName"]: t["status"] for t in state["tracks"]} == {
            "A": "inactive",
            "B": "active",
            "C": "active",
        }
    finally:
        await asyncio.gather(publisher.close(), listener.close())
