"""The few MLS (RFC 9420) structures a DAVE voice server writes or must see through.

The fake voice gateway is the group's *external sender*: it signs Add/Remove proposals with
its own P-256 key and never holds group secrets. Facts in docs/discord-voice.md §5; all of it is
ciphersuite 2 (P-256, SHA-256) with `cryptography` only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ExternalSender", "Reader", "split_commit_welcome", "vec"]

MLS_VERSION_10 = 1
CIPHERSUITE_P256 = 2
WIRE_PUBLIC_MESSAGE = 1
SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
CONTENT_PROPOSAL = 2
CONTENT_COMMIT = 3
PROPOSAL_ADD = 1
PROPOSAL_REMOVE = 3
CREDENTIAL_BASIC = 1
LEAF_SOURCE_KEY_PACKAGE = 1
LEAF_SOURCE_COMMIT = 3


def vec(data: bytes) -> bytes:
    """MLS variable-length vector: a QUIC-style varint length, then the bytes."""
    n = len(data)
    if n < 1 << 6:
        return bytes([n]) + data
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n) + data
    if n < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | n) + data
    raise ValueError(f"vector too long: {n}")


@dataclass
class Reader:
    """Cursor over TLS-presentation-language bytes; raises ValueError when data runs out."""

    data: bytes
    pos: int = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated MLS message at {self.pos} (+{n} > {len(self.data)})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def vec(self) -> bytes:
        prefix = self.data[self.pos] >> 6 if self.pos < len(self.data) else 0
        if prefix == 0:
            n = self.u8() & 0x3F
        elif prefix == 1:
            n = self.u16() & 0x3FFF
        elif prefix == 2:
            n = self.u32() & 0x3FFF_FFFF
        else:
            raise ValueError("invalid MLS varint prefix")
        return self.take(n)


@dataclass
class ExternalSender:
    """The voice server's signing identity in every call's MLS group."""

    identity: bytes = b"fake-discord-voice"
    _key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False
    )

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def package(self) -> bytes:
        """Binary op 25 payload: ExternalSender { signature_key, basic credential }."""
        return vec(self.public_key) + struct.pack(">H", CREDENTIAL_BASIC) + vec(self.identity)

    def add(self, group_id: bytes, epoch: int, key_package: bytes) -> bytes:
        """An Add proposal (a full MLSMessage) for a raw KeyPackage from op 26."""
        return self._proposal(group_id, epoch, struct.pack(">H", PROPOSAL_ADD) + key_package)

    def remove(self, group_id: bytes, epoch: int, leaf_index: int) -> bytes:
        return self._proposal(group_id, epoch, struct.pack(">HI", PROPOSAL_REMOVE, leaf_index))

    def _proposal(self, group_id: bytes, epoch: int, proposal: bytes) -> bytes:
        framed_content = (
            vec(group_id)
            + struct.pack(">QBI", epoch, SENDER_EXTERNAL, 0)  # sender_index 0: our only sender
            + vec(b"")  # authenticated_data
            + bytes([CONTENT_PROPOSAL])
            + proposal
        )
        wire_prefix = struct.pack(">HH", MLS_VERSION_10, WIRE_PUBLIC_MESSAGE)
        # FramedContentTBS for an external sender carries no GroupContext, so the server
        # can sign without knowing the tree (RFC 9420 §6.1).
        tbs = wire_prefix + framed_content
        signature = self._key.sign(
            vec(b"MLS 1.0 FramedContentTBS") + vec(tbs), ec.ECDSA(hashes.SHA256())
        )
        # PublicMessage from an external sender has no membership tag.
        return wire_prefix + framed_content + vec(signature)


def _skip_leaf_node(r: Reader) -> None:
    r.vec()  # encryption_key
    r.vec()  # signature_key
    credential_type = r.u16()
    if credential_type != CREDENTIAL_BASIC:
        raise ValueError(f"unsupported credential type {credential_type}")
    r.vec()  # identity
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        r.vec()
    source = r.u8()
    if source == LEAF_SOURCE_KEY_PACKAGE:
        r.take(16)  # lifetime not_before, not_after
    elif source == LEAF_SOURCE_COMMIT:
        r.vec()  # parent_hash
    r.vec()  # extensions
    r.vec()  # signature


def _commit_length(data: bytes) -> int:
    """Length of the PublicMessage commit at the start of `data` (RFC 9420 §6.2, §12.4)."""
    r = Reader(data)
    if r.u16() != MLS_VERSION_10 or r.u16() != WIRE_PUBLIC_MESSAGE:
        raise ValueError("op 28 does not start with a public MLS message")
    r.vec()  # group_id
    r.u64()  # epoch
    sender_type = r.u8()
    if sender_type in (SENDER_MEMBER, SENDER_EXTERNAL):
        r.u32()
    r.vec()  # authenticated_data
    if r.u8() != CONTENT_COMMIT:
        raise ValueError("op 28 message is not a commit")
    r.vec()  # proposals (ProposalOrRef list)
    if r.u8():  # optional<UpdatePath>
        _skip_leaf_node(r)
        r.vec()  # UpdatePathNode list
    r.vec()  # signature
    r.vec()  # confirmation_tag
    if sender_type == SENDER_MEMBER:
        r.vec()  # membership_tag
    return r.pos


def split_commit_welcome(payload: bytes) -> tuple[bytes, bytes | None]:
    """Split a client's op 28 payload, `[commit][welcome?]` back to back, into its parts."""
    end = _commit_length(payload)
    welcome = payload[end:] or None
    if welcome is not None:
        # davey hands out a bare Welcome struct (not wrapped in an MLSMessage): check that
        # it is one, so a mis-split shows up here rather than as a client's op 31.
        r = Reader(welcome)
        if r.u16() != CIPHERSUITE_P256:
            raise ValueError("op 28 trailer is not a ciphersuite 2 Welcome")
        r.vec()  # secrets
        r.vec()  # encrypted_group_info
        if r.pos != len(welcome):
            raise ValueError("op 28 trailer has bytes after the Welcome")
    return payload[:end], welcome
