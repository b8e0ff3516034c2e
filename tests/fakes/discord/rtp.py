"""RTP packets and Discord's `aead_xchacha20_poly1305_rtpsize` transport encryption.

Mirrors discord.py 2.7.1 (`VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize`) and
voice_recv 0.5.2a179 (`PacketDecryptor._decrypt_rtp_aead_xchacha20_poly1305_rtpsize`):
the RTP header (plus the 4-byte extension header when X is set) is the additional data,
the rest is XChaCha20-Poly1305 ciphertext, and a 4-byte big-endian counter is appended; the
24-byte nonce is that counter followed by 20 zero bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.secret

__all__ = [
    "HEADER_SIZE",
    "IP_DISCOVERY_SIZE",
    "OPUS_PAYLOAD_TYPE",
    "RtpPacket",
    "TransportCipher",
    "audio_level_extension",
    "ip_discovery_reply",
    "parse_ip_discovery_request",
]

RTP_VERSION_BITS = 0x80
OPUS_PAYLOAD_TYPE = 0x78
HEADER_SIZE = 12
EXTENSION_HEADER_SIZE = 4
NONCE_SIZE = 4
ONE_BYTE_EXTENSION_PROFILE = 0xBEDE
AUDIO_LEVEL_EXTENSION_ID = 1
IP_DISCOVERY_SIZE = 74
IP_DISCOVERY_REQUEST = 1
IP_DISCOVERY_RESPONSE = 2


@dataclass(frozen=True)
class RtpPacket:
    """One decrypted RTP packet. `payload` is what the transport layer protected: an Opus
    frame, or a DAVE frame carrying one."""

    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    payload_type: int = OPUS_PAYLOAD_TYPE
    marker: bool = False
    extension: bytes | None = None  # one-byte-header extension elements, unpadded

    def header(self) -> bytes:
        first = RTP_VERSION_BITS | (0x10 if self.extension is not None else 0)
        second = self.payload_type | (0x80 if self.marker else 0)
        return struct.pack(">BBHII", first, second, self.sequence, self.timestamp, self.ssrc)


class TransportCipher:
    """One voice connection's transport crypto (its `secret_key` from SESSION_DESCRIPTION)."""

    def __init__(self, secret_key: bytes) -> None:
        self._box = nacl.secret.Aead(secret_key)
        self._nonce = 0

    def encrypt(self, packet: RtpPacket) -> bytes:
        aad = packet.header()
        plaintext = packet.payload
        if packet.extension is not None:
            # RFC 8285 one-byte header: the element bytes padded to 32-bit words. Under
            # rtpsize the 4-byte profile/length word is authenticated but not encrypted.
            padded = packet.extension + b"\0" * (-len(packet.extension) % 4)
            aad += struct.pack(">HH", ONE_BYTE_EXTENSION_PROFILE, len(padded) // 4)
            plaintext = padded + plaintext
        nonce = struct.pack(">I", self._nonce)
        self._nonce = (self._nonce + 1) & 0xFFFF_FFFF
        ciphertext = self._box.encrypt(plaintext, aad, nonce + b"\0" * 20).ciphertext
        return aad + ciphertext + nonce

    def decrypt(self, data: bytes) -> RtpPacket:
        """Raises nacl.exceptions.CryptoError on a tampered packet, ValueError on garbage."""
        if len(data) < HEADER_SIZE + NONCE_SIZE or data[0] >> 6 != 2:
            raise ValueError("not an RTP packet")
        first, second, sequence, timestamp, ssrc = struct.unpack_from(">BBHII", data)
        csrc_end = HEADER_SIZE + 4 * (first & 0x0F)
        aad_end = csrc_end + (EXTENSION_HEADER_SIZE if first & 0x10 else 0)
        nonce = data[-NONCE_SIZE:]
        plaintext = self._box.decrypt(data[aad_end:-NONCE_SIZE], data[:aad_end], nonce + b"\0" * 20)
        extension = None
        if first & 0x10:
            words = struct.unpack_from(">H", data, csrc_end + 2)[0]
            extension, plaintext = plaintext[: 4 * words], plaintext[4 * words :]
        return RtpPacket(
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=plaintext,
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            extension=extension,
        )


def audio_level_extension(level_dbov: int = 30, voice: bool = True) -> bytes:
    """The ssrc-audio-level element Discord's clients attach (RFC 6464)."""
    return bytes([(AUDIO_LEVEL_EXTENSION_ID << 4) | 0, (0x80 if voice else 0) | level_dbov])


def parse_ip_discovery_request(data: bytes) -> int | None:
    """The SSRC of a 74-byte IP discovery request, or None if `data` is something else."""
    if len(data) != IP_DISCOVERY_SIZE:
        return None
    kind, length, ssrc = struct.unpack_from(">HHI", data)
    if kind != IP_DISCOVERY_REQUEST or length != IP_DISCOVERY_SIZE - 4:
        return None
    return ssrc


def ip_discovery_reply(ssrc: int, address: str, port: int) -> bytes:
    """Type 2, length 70, SSRC, NUL-padded ASCII address (64 bytes), big-endian port."""
    return struct.pack(
        ">HHI64sH", IP_DISCOVERY_RESPONSE, IP_DISCOVERY_SIZE - 4, ssrc, address.encode(), port
    )
