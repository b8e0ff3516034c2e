"""A local SFU that serves Cloudflare Realtime's HTTP API: the embedded default backend."""

from .server import LocalSFU, SfuConfig

__all__ = ["LocalSFU", "SfuConfig"]
