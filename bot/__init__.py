"""The Switchboard service process: Discord bot, voice adapters, store, HTTP API."""

__version__ = "0.1.0"
