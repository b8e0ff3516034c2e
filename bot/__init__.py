"""The Switchboard service process: Discord bot, voice adapters, store, HTTP API."""
