"""`TokenSigner`: invite tokens and participant credentials, signed JWTs (PyJWT, HS256).

Two kinds of token, told apart by their audience so one can never stand in for the other:

- an **invite** (`aud` = `switchboard:invite`) is what `/bridge invite` puts in a link: one
  room, one role, an expiry (at most `MAX_INVITE_TTL_S`), a `jti`. For `/bridge invite` the
  `jti` is the id of the invite stored with its cap and revocation (`bot.store`), which a
  join checks too; an operator's invite (`op`) is not stored.
- a **participant credential** (`aud` = `switchboard:participant`) is what joining returns:
  short-lived (`CREDENTIAL_TTL_S`), bound to one participant id (`sub`), refreshed by the page
  while it stays in the room.

Every claim is required and checked (signature, `exp`, `iat`, `iss`, `aud`, and our own
`room`/`role` values); failures raise `TokenError` with a stable code (`token_expired` or
`token_invalid`) and never echo the token.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

__all__ = [
    "CREDENTIAL_TTL_S",
    "MAX_INVITE_TTL_S",
    "MIN_SECRET_BYTES",
    "Invite",
    "ParticipantCredential",
    "Role",
    "TokenError",
    "TokenSigner",
]

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "switchboard"
INVITE_AUDIENCE = "switchboard:invite"
CREDENTIAL_AUDIENCE = "switchboard:participant"
MIN_SECRET_BYTES = 32
"""HS256 keys shorter than the hash output (RFC 7518 §3.2) are refused."""
MAX_INVITE_TTL_S = 30 * 86_400
CREDENTIAL_TTL_S = 600
"""A participant credential lives 10 minutes; the page refreshes it at half-life."""
LEEWAY_S = 5
"""Clock skew tolerated on `exp`/`iat` (several processes may sign and verify)."""
MAX_TOKEN_CHARS = 2048
"""Anything longer is refused before it is parsed."""


class Role(StrEnum):
    SPEAKER = "speaker"
    LISTENER = "listener"

    @property
    def can_publish(self) -> bool:
        return self is Role.SPEAKER


class TokenError(Exception):
    """A token was refused. `code` is `token_expired` or `token_invalid`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Invite:
    room: str
    role: Role
    expires_at: int
    """Unix seconds."""
    issued_at: int
    jti: str
    guild_id: str | None = None
    created_by: str | None = None
    operator: bool = False
    """Minted by the operator (`python -m bot invite`), not `/bridge invite`: the room may
    exist only for the web (no voice channel need be linked to it)."""


@dataclass(frozen=True, slots=True)
class ParticipantCredential:
    participant_id: str
    room: str
    role: Role
    expires_at: int
    issued_at: int
    jti: str
    invite_id: str | None = None
    """The `jti` of the invite the participant first joined with (kept across rejoins, so
    per-invite limits hold for rejoins too)."""
    operator: bool = False
    """Joined with an operator's invite (see `Invite.operator`), kept across rejoins."""


class TokenSigner:
    """Signs and verifies both token kinds with one HS256 key.

    `secret` comes from `SWITCHBOARD_INVITE_SECRET`; None makes a random key (tokens then
    die with the process). A key shorter than 32 bytes is refused.
    """

    def __init__(self, secret: str | bytes | None, *, clock: Any = time.time) -> None:
        if secret is None:
            key = secrets.token_bytes(MIN_SECRET_BYTES)
            logger.warning(
                "SWITCHBOARD_INVITE_SECRET is not set: invite links are signed with a random key "
                "and stop working when the service restarts"
            )
        else:
            key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"SWITCHBOARD_INVITE_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        self._key = key
        self._clock = clock

    def __repr__(self) -> str:  # never show the key
        return "TokenSigner()"

    # -- invites ----------------------------------------------------------------------------

    def issue_invite(
        self,
        room: str,
        role: Role,
        ttl_s: int,
        *,
        guild_id: int | str | None = None,
        created_by: int | str | None = None,
        operator: bool = False,
        jti: str | None = None,
    ) -> tuple[str, Invite]:
        """Sign an invite; `jti` is the stored invite's id when there is one (a random id
        otherwise, for operator invites that are not stored)."""
        if not 0 < ttl_s <= MAX_INVITE_TTL_S:
            raise ValueError(f"invite ttl_s must be within 1..{MAX_INVITE_TTL_S}")
        now = int(self._clock())
        invite = Invite(
            room=room,
            role=Role(role),
            expires_at=now + int(ttl_s),
            issued_at=now,
            jti=jti or uuid.uuid4().hex,
            guild_id=None if guild_id is None else str(guild_id),
            created_by=None if created_by is None else str(created_by),
            operator=operator,
        )
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": INVITE_AUDIENCE,
            "room": invite.room,
            "role": invite.role.value,
            "iat": invite.issued_at,
            "exp": invite.expires_at,
            "jti": invite.jti,
        }
        if invite.guild_id is not None:
            claims["gid"] = invite.guild_id
        if invite.created_by is not None:
            claims["by"] = invite.created_by
        if invite.operator:
            claims["op"] = True
        return self._encode(claims), invite

    def verify_invite(self, token: str) -> Invite:
        claims = self._decode(
            token, INVITE_AUDIENCE, ("room", "role", "exp", "iat", "jti", "iss", "aud")
        )
        return Invite(
            room=_claim_str(claims, "room"),
            role=_claim_role(claims),
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            jti=_claim_str(claims, "jti"),
            guild_id=_optional_str(claims, "gid"),
            created_by=_optional_str(claims, "by"),
            operator=claims.get("op") is True,
        )

    # -- participant credentials --------------------------------------------------------------

    def issue_credential(
        self,
        participant_id: str,
        room: str,
        role: Role,
        ttl_s: int = CREDENTIAL_TTL_S,
        *,
        invite_id: str | None = None,
        operator: bool = False,
    ) -> tuple[str, ParticipantCredential]:
        now = int(self._clock())
        credential = ParticipantCredential(
            participant_id=participant_id,
            room=room,
            role=Role(role),
            expires_at=now + int(ttl_s),
            issued_at=now,
            jti=uuid.uuid4().hex,
            invite_id=invite_id,
            operator=operator,
        )
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CREDENTIAL_AUDIENCE,
            "sub": credential.participant_id,
            "room": credential.room,
            "role": credential.role.value,
            "iat": credential.issued_at,
            "exp": credential.expires_at,
            "jti": credential.jti,
        }
        if invite_id is not None:
            claims["inv"] = invite_id
        if operator:
            claims["op"] = True
        return self._encode(claims), credential

    def verify_credential(self, token: str) -> ParticipantCredential:
        claims = self._decode(
            token, CREDENTIAL_AUDIENCE, ("sub", "room", "role", "exp", "iat", "jti", "iss", "aud")
        )
        return ParticipantCredential(
            participant_id=_claim_str(claims, "sub"),
            room=_claim_str(claims, "room"),
            role=_claim_role(claims),
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            jti=_claim_str(claims, "jti"),
            invite_id=_optional_str(claims, "inv"),
            operator=claims.get("op") is True,
        )

    # -- PyJWT ----------------------------------------------------------------------------------

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": "JWT"})

    def _decode(self, token: str, audience: str, required: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token_invalid", "the token is missing or malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={
                    "require": list(required),
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token_invalid", "the token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            # Bad signature, wrong audience/issuer, a missing claim, garbage: one answer.
            logger.info("token refused audience=%s reason=%s", audience, type(exc).__name__)
            raise TokenError("token_invalid", "the token is not valid") from None
        # PyJWT checks iat is a number not in the future; reject a token minted "later" than
        # it expires, which no signer of ours makes.
        if int(claims["iat"]) > int(claims["exp"]):
            raise TokenError("token_invalid", "the token is not valid")
        return claims


def _claim_str(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError("token_invalid", "the token is not valid")
    return value


def _optional_str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _claim_role(claims: dict[str, Any]) -> Role:
    try:
        return Role(_optional_str(claims, "role") or "")  # "" is no role: ValueError below
    except ValueError:
        raise TokenError("token_invalid", "the token is not valid") from None
