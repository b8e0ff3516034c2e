"""A local SFU that serves Cloudflare Realtime's HTTP API: the embedded default backend."""

from .server import DEV_APP_SECRET, LOOPBACK_HOSTS, LocalSFU, SfuConfig

__all__ = ["DEV_APP_SECRET", "LOOPBACK_HOSTS", "LocalSFU", "SfuConfig"]
