"""Web participants: invite tokens, the HTTP API and WebSocket for browser pages, and the
room page itself (static/). The browser never holds Realtime credentials: the service
creates its session and pushes and pulls tracks for it, after checking what it may do."""

from media.ratelimit import KeyedBuckets, RateSpec, TokenBucket

from .api import RoomCheck, WebApi, known_rooms
from .errors import WebError
from .ice import IceGrant, IceServerSource
from .invites import INVITE_TTLS, InviteLink, InviteLinks
from .participants import MIC_TRACK, Participant, ParticipantRegistry, ParticipantState
from .tokens import (
    CREDENTIAL_TTL_S,
    MAX_INVITE_TTL_S,
    Invite,
    ParticipantCredential,
    Role,
    TokenError,
    TokenSigner,
)

__all__ = [
    "CREDENTIAL_TTL_S",
    "INVITE_TTLS",
    "MAX_INVITE_TTL_S",
    "MIC_TRACK",
    "IceGrant",
    "IceServerSource",
    "Invite",
    "InviteLink",
    "InviteLinks",
    "KeyedBuckets",
    "Participant",
    "ParticipantCredential",
    "ParticipantRegistry",
    "ParticipantState",
    "RateSpec",
    "Role",
    "RoomCheck",
    "TokenBucket",
    "TokenError",
    "TokenSigner",
    "WebApi",
    "WebError",
    "known_rooms",
]
