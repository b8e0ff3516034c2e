"""A sender loop waiting on one of our tracks moves to the track that replaces it."""

from __future__ import annotations

import asyncio

import pytest

from media.audio.idle import IdleTrack
from media.audio.source import OpusSource

FRAME = 960


@pytest.mark.timeout(5)
async def test_a_recv_parked_on_the_idle_track_returns_the_successors_packet():
    idle = IdleTrack()
    parked = asyncio.create_task(idle.recv())
    await asyncio.sleep(0)  # let it park
    source = OpusSource()
    source.push(b"\xfc\x01", 0)
    idle.hand_over(source.track())
    packet = await asyncio.wait_for(parked, 1)
    assert bytes(packet) == b"\xfc\x01"


@pytest.mark.timeout(5)
async def test_a_recv_waiting_on_a_silent_source_moves_to_the_successor():
    quiet, speaking = OpusSource("quiet"), OpusSource("speaking")
    old = quiet.track()
    waiting = asyncio.create_task(old.recv())
    await asyncio.sleep(0)  # waiting for a packet that never comes
    speaking.push(b"\xfc\x02", 0)
    old.hand_over(speaking.track())
    packet = await asyncio.wait_for(waiting, 1)
    assert bytes(packet) == b"\xfc\x02"
    assert quiet.queued == 0


@pytest.mark.timeout(5)
async def test_a_handover_chain_ends_at_the_last_track():
    first, second = OpusSource("first"), OpusSource("second")
    old, idle = first.track(), IdleTrack()
    waiting = asyncio.create_task(old.recv())
    await asyncio.sleep(0)
    old.hand_over(idle)  # unpublished: the sender parks on the idle track
    await asyncio.sleep(0)
    assert not waiting.done()
    idle.hand_over(second.track())  # published again on the same transceiver
    second.push(b"\xfc\x03", 0)
    packet = await asyncio.wait_for(waiting, 1)
    assert bytes(packet) == b"\xfc\x03"
