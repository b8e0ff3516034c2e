"""JSON for the room directory's values: a member record and the events of a room.

A shared directory keeps members and sends events as text that another process, possibly a
newer or older release, reads. Every payload carries `"v"`; a reader skips a version or a type
it does not know (returns None) instead of failing, so processes of two releases can share one
Redis during a rolling deploy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from .rooms import (
    Member,
    MemberJoined,
    MemberKind,
    MemberLeft,
    RoomEvent,
    SpeakingChanged,
    TrackInfo,
    TrackKind,
    TrackPublished,
    TrackRemoved,
)

__all__ = [
    "CODEC_VERSION",
    "OwnedMember",
    "decode_event",
    "decode_member",
    "encode_event",
    "encode_member",
]

logger = logging.getLogger(__name__)

CODEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class OwnedMember:
    """A member as a shared directory stores it: with the process that keeps it alive."""

    member: Member
    owner: str


def _track(track: TrackInfo) -> dict[str, Any]:
    return {
        "session_id": track.session_id,
        "track_name": track.track_name,
        "display_name": track.display_name,
        "user_id": track.user_id,
        "kind": track.kind.value,
    }


def _track_from(data: dict[str, Any]) -> TrackInfo:
    return TrackInfo(
        session_id=str(data["session_id"]),
        track_name=str(data["track_name"]),
        display_name=str(data.get("display_name", "")),
        user_id=None if data.get("user_id") is None else str(data["user_id"]),
        kind=TrackKind(data.get("kind", TrackKind.AUDIO.value)),
    )


def _known_tracks(items: list[dict[str, Any]]) -> tuple[TrackInfo, ...]:
    """A newer release's kinds of publication are left out of the member, not fatal to it."""
    tracks = []
    for item in items:
        try:
            tracks.append(_track_from(item))
        except ValueError:
            logger.debug("publication of an unknown kind skipped kind=%s", item.get("kind"))
    return tuple(tracks)


def _member(member: Member) -> dict[str, Any]:
    return {
        "member_id": member.member_id,
        "kind": member.kind.value,
        "display_name": member.display_name,
        "tracks": [_track(t) for t in member.tracks],
        "speaking": sorted(member.speaking),
        "joined_at": member.joined_at,
    }


def _member_from(data: dict[str, Any]) -> Member:
    return Member(
        member_id=str(data["member_id"]),
        kind=MemberKind(data["kind"]),
        display_name=str(data["display_name"]),
        tracks=_known_tracks(data["tracks"]),
        speaking=frozenset(str(s) for s in data["speaking"]),
        joined_at=float(data["joined_at"]),
    )


def encode_member(owned: OwnedMember) -> str:
    return json.dumps({"v": CODEC_VERSION, "owner": owned.owner, "member": _member(owned.member)})


def decode_member(text: str | bytes) -> OwnedMember | None:
    """None for a record of another version or one that does not parse (logged)."""
    try:
        data = json.loads(text)
        if data.get("v") != CODEC_VERSION:
            return None
        return OwnedMember(_member_from(data["member"]), str(data["owner"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("unreadable member record skipped error=%s", exc)
        return None


def encode_event(event: RoomEvent) -> str:
    body: dict[str, Any] = {"v": CODEC_VERSION, "room": event.room}
    match event:
        case MemberJoined(member=member):
            body |= {"type": "member_joined", "member": _member(member)}
        case MemberLeft(member_id=member_id):
            body |= {"type": "member_left", "member_id": member_id}
        case TrackPublished(member_id=member_id, track=track):
            body |= {"type": "track_published", "member_id": member_id, "track": _track(track)}
        case TrackRemoved(member_id=member_id, track=track):
            body |= {"type": "track_removed", "member_id": member_id, "track": _track(track)}
        case SpeakingChanged(member_id=member_id, track_name=name, speaking=speaking):
            body |= {
                "type": "speaking_changed",
                "member_id": member_id,
                "track_name": name,
                "speaking": speaking,
            }
    return json.dumps(body)


def decode_event(text: str | bytes) -> RoomEvent | None:
    """None for an event of another version or type, or one that does not parse (logged)."""
    try:
        data = json.loads(text)
        if data.get("v") != CODEC_VERSION:
            return None
        room = str(data["room"])
        match data.get("type"):
            case "member_joined":
                return MemberJoined(room, _member_from(data["member"]))
            case "member_left":
                return MemberLeft(room, str(data["member_id"]))
            case "track_published":
                return TrackPublished(room, str(data["member_id"]), _track_from(data["track"]))
            case "track_removed":
                return TrackRemoved(room, str(data["member_id"]), _track_from(data["track"]))
            case "speaking_changed":
                return SpeakingChanged(
                    room, str(data["member_id"]), str(data["track_name"]), bool(data["speaking"])
                )
            case _:
                return None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("unreadable room event skipped error=%s", exc)
        return None
