"""`python -m bot`: run Switchboard (the `worker` process of the Procfile)."""

from __future__ import annotations

import asyncio
import logging
import sys

import stamina

from .config import ConfigError, load_settings
from .service import Service
from .voice import VoiceLink


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("discord.ext.voice_recv").setLevel(logging.WARNING)
    # The Realtime client logs its own retries with context; stamina's bare lines are noise.
    stamina.instrumentation.set_on_retry_hooks([])
    service = Service(settings, link_factory=VoiceLink)
    asyncio.run(service.run_until_signalled())


if __name__ == "__main__":
    main()
