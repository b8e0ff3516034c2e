"""`VoiceCounters`: what the Discord voice plane counts, one object per link.

Plain integers, so the voice code has no metrics dependency; the service's metrics module can
export them (e.g. a Prometheus collector reading the fields on scrape, labelled by guild).
Each field has exactly one writer thread (noted per group), so no lock is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["VoiceCounters"]


@dataclass(slots=True)
class VoiceCounters:
    # Receive: the event loop (gap fillers: voice_recv's router thread).
    frames_received: int = 0
    """Transport-decrypted Opus frames voice_recv handed over (gap fillers excluded)."""
    gap_fillers: int = 0
    """voice_recv's stand-ins for missing packets (opus == b""): ignored."""
    frames_forwarded: int = 0
    """Frames pushed into the bridge (each Discord user is one bridge input)."""
    silence_frames: int = 0
    """Opus silence frames (F8 FF FE) received and passed through as is."""
    dave_decrypted: int = 0
    dave_failures: int = 0
    """Frames DAVE refused to decrypt (tampered, replayed, unknown sender): replaced by silence."""
    dave_held: int = 0
    """Frames that did not decrypt at first and were held for a retry (maybe early)."""
    dave_late_decrypted: int = 0
    """Held frames that decrypted on a retry (they had overtaken a DAVE transition)."""
    dave_not_ready: int = 0
    """DAVE frames that arrived while our DAVE session had no group yet: replaced by silence."""
    unmapped_buffered: int = 0
    """Frames held because their SSRC was not yet mapped to a user (SPEAKING not seen)."""
    unmapped_flushed: int = 0
    """Held frames delivered once the mapping arrived."""
    unmapped_dropped: int = 0
    """Held frames dropped: too old, or too many unknown SSRCs."""
    departed_dropped: int = 0
    """Frames from a user who had already left the channel (in flight at the leave)."""
    own_dropped: int = 0
    """Frames attributed to the bot's own user (never forwarded)."""
    # Send: Discord's player thread.
    frames_sent: int = 0
    """Voiced Opus frames handed to discord.py (passed through + encoded)."""
    frames_passed_through: int = 0
    """One room speaker's packets sent as they came (no decode, no encode)."""
    frames_encoded: int = 0
    """Frames of the room's mix encoded here (several speakers, or a concealed frame)."""
    silence_sent: int = 0
    """Silence frames returned while the room was quiet (before a pause; always in MIX mode)."""
    send_pauses: int = 0
    """Times sending paused because nobody spoke (SPEAKING off)."""
    frames_suppressed: int = 0
    """20 ms frames not sent while paused (counted when sending resumes)."""
    send_errors: int = 0
    """Mix or encode failures: a silence frame was sent instead."""
    # Link: the event loop.
    reconnects: int = 0
    """Rejoins after the voice connection was lost (kick, failed reconnect, dead websocket)."""
    reconnect_failures: int = 0
    moves_reverted: int = 0
    """Times the bot was found in another channel and moved back to its bridged channel."""
    player_restarts: int = 0
    listener_restarts: int = 0
    speakers_removed: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
