from __future__ import annotations

import asyncio

import pytest

from media.rooms import (
    InMemoryDirectory,
    MemberJoined,
    MemberKind,
    MemberLeft,
    SpeakingChanged,
    TrackInfo,
    TrackPublished,
    TrackRemoved,
)


async def take(stream, count: int) -> list:
    out = []
    async for event in stream:
        out.append(event)
        if len(out) == count:
            return out
    return out


@pytest.mark.timeout(5)
async def test_events_in_order_and_snapshot():
    directory = InMemoryDirectory()
    track = TrackInfo("s1", "dc:1:2", "Ann", "2")
    async with directory.events("lobby") as stream:
        await directory.join("lobby", "m1", MemberKind.DISCORD, "#general")
        await directory.publish("lobby", "m1", track)
        await directory.set_speaking("lobby", "m1", "dc:1:2", True)
        await directory.set_speaking("lobby", "m1", "dc:1:2", True)  # no-op: no event
        members = await directory.members("lobby")
        assert members[0].tracks == (track,) and members[0].speaking == {"dc:1:2"}
        await directory.leave("lobby", "m1")
        events = await asyncio.wait_for(take(stream, 5), 1)
    assert [type(e) for e in events] == [
        MemberJoined,
        TrackPublished,
        SpeakingChanged,
        TrackRemoved,
        MemberLeft,
    ]
    assert events[3].track == track
    assert await directory.members("lobby") == []
    assert await directory.rooms() == []


@pytest.mark.timeout(5)
async def test_rooms_are_isolated_and_unpublish_clears_speaking():
    directory = InMemoryDirectory()
    async with directory.events("red") as red:
        await directory.join("blue", "b", MemberKind.WEB, "Bob")
        await directory.join("red", "r", MemberKind.WEB, "Rita")
        track = TrackInfo("s", "mic")
        await directory.publish("red", "r", track)
        await directory.set_speaking("red", "r", "mic", True)
        await directory.unpublish("red", "r", track)
        events = await asyncio.wait_for(take(red, 4), 1)
    assert all(e.room == "red" for e in events)
    (member,) = await directory.members("red")
    assert member.tracks == () and member.speaking == frozenset()
    assert await directory.rooms() == ["blue", "red"]
    with pytest.raises(KeyError):
        await directory.publish("red", "nobody", track)
