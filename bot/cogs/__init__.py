"""Slash-command cogs: one per feature."""

from .bridge_admin import BridgeAdmin
from .moderation import Moderation
from .voice_session import VoiceSession

__all__ = ["BridgeAdmin", "Moderation", "VoiceSession"]
