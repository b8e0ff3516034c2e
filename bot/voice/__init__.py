"""The Discord voice plane: one voice channel <-> one `media.bridge.Bridge`.

    vc = await channel.connect(cls=voice_recv.VoiceRecvClient)
    link = VoiceLink(vc, bridge, guild_id, counters)
    await link.start()      # the link owns the connection from here: rejoins, moves back
    ...
    await link.stop()       # and disconnects

`VoiceReceiver` (voice_recv sink, then `DaveDecryptor`) and `BridgeSource` (the Opus source:
passthrough, mix, or nothing while the room is quiet) are the two halves; `VoiceCounters` is
what they count. `compat` is the one module that touches discord.py's and voice_recv's
internals.
"""

from .counters import VoiceCounters
from .link import VoiceLink, VoiceLinkState, track_name
from .opus_loader import load_opus
from .receive import VoiceReceiver
from .send import BridgeSource, SendMode

__all__ = [
    "BridgeSource",
    "SendMode",
    "VoiceCounters",
    "VoiceLink",
    "VoiceLinkState",
    "VoiceReceiver",
    "load_opus",
    "track_name",
]
