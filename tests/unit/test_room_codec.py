"""The directory's JSON: every event and member survives a round trip; a payload of another
version, an unknown type or garbage is skipped, never raised."""

from __future__ import annotations

import json

import pytest

from media.room_codec import (
    CODEC_VERSION,
    OwnedMember,
    decode_event,
    decode_member,
    encode_event,
    encode_member,
)
from media.rooms import (
    Member,
    MemberJoined,
    MemberKind,
    MemberLeft,
    SpeakingChanged,
    TrackInfo,
    TrackKind,
    TrackPublished,
    TrackRemoved,
)

pytestmark = pytest.mark.timeout(10)

TRACK = TrackInfo("session-1", "voice", 'Ünïcode "name"', "42")
CHAT = TrackInfo("session-1", "chat", "Lounge", None, TrackKind.CHAT)
MEMBER = Member(
    "discord:1:2",
    MemberKind.DISCORD,
    "Lounge",
    (TRACK, TrackInfo("s2", "b"), CHAT),
    frozenset({"voice"}),
)


@pytest.mark.parametrize(
    "event",
    [
        MemberJoined("r", MEMBER),
        MemberLeft("r", "m"),
        TrackPublished("r", "m", TRACK),
        TrackRemoved("r", "m", TrackInfo("s", "t")),
        SpeakingChanged("r", "m", "voice", True),
        SpeakingChanged("r", "m", "voice", False),
    ],
)
def test_events_round_trip(event) -> None:
    text = encode_event(event)
    assert json.loads(text)["v"] == CODEC_VERSION
    assert decode_event(text) == event


def test_members_round_trip_with_their_owner() -> None:
    owned = OwnedMember(MEMBER, "host:1:abcd")
    assert decode_member(encode_member(owned)) == owned


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"v": CODEC_VERSION + 1, "type": "member_left", "room": "r", "member_id": "m"}),
        json.dumps({"v": CODEC_VERSION, "type": "member_teleported", "room": "r"}),
        json.dumps({"v": CODEC_VERSION, "type": "member_left", "room": "r"}),
        json.dumps(["not", "an", "object"]),
        "not json",
        b"\xff\xfe",
    ],
)
def test_unreadable_events_are_skipped(text) -> None:
    assert decode_event(text) is None


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"v": CODEC_VERSION + 1, "owner": "o", "member": {}}),
        json.dumps({"v": CODEC_VERSION, "owner": "o", "member": {"member_id": "m"}}),
        json.dumps(
            {
                "v": CODEC_VERSION,
                "owner": "o",
                "member": {
                    **json.loads(encode_member(OwnedMember(MEMBER, "o")))["member"],
                    "kind": "alien",
                },
            }
        ),
        "{",
    ],
)
def test_unreadable_members_are_skipped(text) -> None:
    assert decode_member(text) is None


def test_a_publication_of_an_unknown_kind_is_left_out_of_its_member() -> None:
    record = json.loads(encode_member(OwnedMember(MEMBER, "o")))
    record["member"]["tracks"][1]["kind"] = "hologram"
    owned = decode_member(json.dumps(record))
    assert owned is not None
    assert owned.member.tracks == (TRACK, CHAT)


def test_a_track_of_an_older_release_is_audio() -> None:
    record = json.loads(encode_event(TrackPublished("r", "m", TRACK)))
    del record["track"]["kind"]
    assert decode_event(json.dumps(record)) == TrackPublished("r", "m", TRACK)
