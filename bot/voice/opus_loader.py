"""Loads libopus into discord.py (`discord.opus.load_opus`), idempotently.

libopus is not a system package on our hosts; the PyAV wheel ships one in `av.libs/`, next
to the `av` package. `SWITCHBOARD_LIBOPUS` overrides the path (the same variable the media
package's own binding reads). Our send path hands discord.py Opus it encoded itself and our
receive path asks voice_recv for Opus, so discord.py only needs libopus for code that sends
PCM or decodes (other sinks, `discord.FFmpegPCMAudio`); loading it up front makes those work
and fails early and loudly if the wheel changed.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
from pathlib import Path

import discord.opus

__all__ = ["find_libopus", "load_opus"]

logger = logging.getLogger(__name__)

LIBOPUS_ENV = "SWITCHBOARD_LIBOPUS"


def find_libopus() -> Path:
    """`$SWITCHBOARD_LIBOPUS`, else PyAV's bundled copy, else the system's."""
    override = os.environ.get(LIBOPUS_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{LIBOPUS_ENV}={override} is not a file")
        return path
    # find_spec locates the wheel without importing av.
    spec = importlib.util.find_spec("av")
    if spec is not None and spec.origin is not None:
        bundled = sorted((Path(spec.origin).parent.parent / "av.libs").glob("libopus*.so*"))
        if bundled:
            return bundled[0]
    system = ctypes.util.find_library("opus")
    if system is None:
        raise FileNotFoundError(
            f"libopus not found: install PyAV (it bundles one) or set {LIBOPUS_ENV}"
        )
    return Path(system)


def load_opus() -> None:
    """Load libopus into discord.opus unless it already is."""
    if discord.opus.is_loaded():
        return
    path = find_libopus()
    discord.opus.load_opus(str(path))
    logger.info("discord.py libopus loaded from %s", path)
