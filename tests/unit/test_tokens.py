"""Invite tokens and participant credentials: what is signed, and every way one is refused."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from bot.web.tokens import (
    CREDENTIAL_AUDIENCE,
    INVITE_AUDIENCE,
    ISSUER,
    MAX_INVITE_TTL_S,
    Role,
    TokenError,
    TokenSigner,
)

pytestmark = pytest.mark.timeout(10)

SECRET = "s" * 48


def signer(at: float | None = None, secret: str = SECRET) -> TokenSigner:
    fixed = time.time() if at is None else at
    return TokenSigner(secret, clock=lambda: fixed)


def refused(call, code: str = "token_invalid") -> TokenError:
    with pytest.raises(TokenError) as caught:
        call()
    assert caught.value.code == code
    return caught.value


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_invite_round_trip_carries_room_role_expiry_and_id() -> None:
    now = int(time.time())
    token, invite = signer(now).issue_invite(
        "lobby", Role.LISTENER, 3600, guild_id=42, created_by=7
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "iss": ISSUER,
        "aud": INVITE_AUDIENCE,
        "room": "lobby",
        "role": "listener",
        "iat": now,
        "exp": now + 3600,
        "jti": invite.jti,
        "gid": "42",
        "by": "7",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    verified = TokenSigner(SECRET).verify_invite(token)
    assert verified == invite
    assert verified.role is Role.LISTENER and not verified.role.can_publish


def test_each_invite_has_its_own_id() -> None:
    s = signer()
    assert (
        s.issue_invite("lobby", Role.SPEAKER, 60)[1].jti
        != s.issue_invite("lobby", Role.SPEAKER, 60)[1].jti
    )


def test_credential_round_trip_is_bound_to_the_participant() -> None:
    token, credential = signer().issue_credential(
        "web-1", "lobby", Role.SPEAKER, 600, invite_id="inv-1"
    )
    verified = TokenSigner(SECRET).verify_credential(token)
    assert verified == credential and verified.invite_id == "inv-1"
    assert verified.participant_id == "web-1" and verified.room == "lobby"
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == CREDENTIAL_AUDIENCE


def test_expired_invite_and_credential_are_refused_as_expired() -> None:
    past = time.time() - 7200
    invite, _ = signer(past).issue_invite("lobby", Role.SPEAKER, 3600)
    credential, _ = signer(past).issue_credential("web-1", "lobby", Role.SPEAKER, 600)
    refused(lambda: TokenSigner(SECRET).verify_invite(invite), "token_expired")
    refused(lambda: TokenSigner(SECRET).verify_credential(credential), "token_expired")


def test_expiry_tolerates_a_few_seconds_of_clock_skew_only() -> None:
    now = time.time()
    just, _ = signer(now - 62).issue_invite("lobby", Role.SPEAKER, 60)  # expired 2 s ago
    TokenSigner(SECRET).verify_invite(just)
    stale, _ = signer(now - 70).issue_invite("lobby", Role.SPEAKER, 60)  # 10 s ago
    refused(lambda: TokenSigner(SECRET).verify_invite(stale), "token_expired")


def test_token_issued_in_the_future_is_refused() -> None:
    token, _ = signer(time.time() + 3600).issue_invite("lobby", Role.SPEAKER, 7200)
    refused(lambda: TokenSigner(SECRET).verify_invite(token))


def test_tampered_payload_is_refused() -> None:
    token, _ = signer(time.time()).issue_invite("lobby", Role.LISTENER, 3600)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    for change in ({"role": "speaker"}, {"room": "other"}, {"exp": claims["exp"] + 10**6}):
        forged = ".".join((header, _b64(claims | change), signature))
        refused(lambda forged=forged: TokenSigner(SECRET).verify_invite(forged))


def test_tampered_signature_and_other_keys_are_refused() -> None:
    token, _ = signer(time.time()).issue_invite("lobby", Role.SPEAKER, 3600)
    head, _, signature = token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(lambda: TokenSigner(SECRET).verify_invite(f"{head}.{flipped}"))
    refused(lambda: TokenSigner("x" * 48).verify_invite(token))
    refused(lambda: TokenSigner(None).verify_invite(token))


def test_unsigned_and_other_algorithm_tokens_are_refused() -> None:
    claims = {
        "iss": ISSUER,
        "aud": INVITE_AUDIENCE,
        "room": "lobby",
        "role": "speaker",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": "x",
    }
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    refused(lambda: TokenSigner(SECRET).verify_invite(unsigned))
    hs512 = jwt.encode(claims, SECRET + SECRET[:16], algorithm="HS512")
    refused(lambda: TokenSigner(SECRET).verify_invite(hs512))


def test_one_kind_never_stands_in_for_the_other() -> None:
    s = signer(time.time())
    invite, _ = s.issue_invite("lobby", Role.SPEAKER, 3600)
    credential, _ = s.issue_credential("web-1", "lobby", Role.SPEAKER)
    refused(lambda: s.verify_credential(invite))
    refused(lambda: s.verify_invite(credential))


@pytest.mark.parametrize("drop", ["room", "role", "exp", "iat", "jti", "iss", "aud"])
def test_every_claim_is_required(drop: str) -> None:
    claims = {
        "iss": ISSUER,
        "aud": INVITE_AUDIENCE,
        "room": "lobby",
        "role": "speaker",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": "x",
    }
    del claims[drop]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    refused(lambda: TokenSigner(SECRET).verify_invite(token))


@pytest.mark.parametrize(
    "change", [{"role": "admin"}, {"room": 5}, {"iss": "someone"}, {"aud": ["x"]}]
)
def test_claims_with_unknown_values_are_refused(change: dict) -> None:
    claims = {
        "iss": ISSUER,
        "aud": INVITE_AUDIENCE,
        "room": "lobby",
        "role": "speaker",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": "x",
    } | change
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    refused(lambda: TokenSigner(SECRET).verify_invite(token))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000, None, 12])
def test_garbage_is_refused_without_echoing_it(garbage) -> None:
    error = refused(lambda: TokenSigner(SECRET).verify_invite(garbage))
    assert str(garbage) not in error.message or not garbage


def test_short_secrets_are_refused_and_none_means_a_random_key() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenSigner("too-short")
    a, b = TokenSigner(None), TokenSigner(None)
    token, _ = a.issue_invite("lobby", Role.SPEAKER, 60)
    assert a.verify_invite(token).room == "lobby"
    refused(lambda: b.verify_invite(token))
    assert SECRET not in repr(TokenSigner(SECRET))


def test_invite_lifetime_is_bounded() -> None:
    with pytest.raises(ValueError):
        signer().issue_invite("lobby", Role.SPEAKER, 0)
    with pytest.raises(ValueError):
        signer().issue_invite("lobby", Role.SPEAKER, MAX_INVITE_TTL_S + 1)


def test_operator_invites_and_their_credentials_say_so() -> None:
    s = signer()
    token, invite = s.issue_invite("garden", Role.SPEAKER, 60, operator=True)
    assert invite.operator and jwt.decode(token, options={"verify_signature": False})["op"] is True
    assert s.verify_invite(token).operator
    credential, held = s.issue_credential("web-1", "garden", Role.SPEAKER, operator=True)
    assert held.operator and s.verify_credential(credential).operator
    plain, _ = s.issue_invite("garden", Role.SPEAKER, 60, guild_id=1)
    assert "op" not in jwt.decode(plain, options={"verify_signature": False})
    assert not s.verify_invite(plain).operator
    assert not s.verify_credential(s.issue_credential("web-2", "garden", Role.SPEAKER)[0]).operator
