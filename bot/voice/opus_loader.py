"""Loads libopus into discord.py (`discord.opus.load_opus`), idempotently.

libopus is not a system package on our hosts; the PyAV wheel ships one in `av.libs/`, next
to the `av` package. `SWITCHBOARD_LIBOPUS` overrides the path (the same variable the media
package's own binding reads). Our send path hands discord.py Opus it encoded itself and our
receive path asks voice_recv for Opus, so discord.py only needs libopus for code that sends
PCM or decodes (other sinks, `discord.FFmpegPCMAudio`); loading it up front makes those work
and fails early and loudly if the wheel changed.
"""

from __future__ import annotations

import logging

import discord.opus

from media.audio.opus import find_libopus

__all__ = ["load_opus"]

logger = logging.getLogger(__name__)


def load_opus() -> None:
    """Load libopus into discord.opus unless it already is."""
    if discord.opus.is_loaded():
        return
    path = find_libopus()
    discord.opus.load_opus(str(path))
    logger.info("discord.py libopus loaded from %s", path)
