"""`python -m media.sfu`: run the local Realtime-compatible SFU on its own.

Settings come from flags, else environment variables, else the `[sfu]` table of config.toml.
The app secret is read from the environment only; without one, a loopback-only development
secret is used, and binding any other address without it is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from .server import LocalSFU, SfuConfig

DEV_APP_ID = "local"


def _file_settings(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        sys.exit(f"{path}: {exc}")
    section = data.get("sfu", {})
    if not isinstance(section, dict):
        sys.exit(f"{path}: [sfu] must be a table")
    return section


def parse_args(argv: list[str] | None = None) -> SfuConfig:
    parser = argparse.ArgumentParser(prog="python -m media.sfu", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("SWITCHBOARD_CONFIG", "config.toml"))
    parser.add_argument("--host", help="address to listen on (env SWITCHBOARD_SFU_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (env SWITCHBOARD_SFU_PORT)")
    parser.add_argument("--app-id", help="Realtime app id clients use (env SWITCHBOARD_SFU_APP_ID)")
    args = parser.parse_args(argv)
    file = _file_settings(Path(args.config))

    def pick(flag: Any, env: str, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        if env in os.environ:
            return os.environ[env]
        return file.get(key, default)

    host = str(pick(args.host, "SWITCHBOARD_SFU_HOST", "host", "127.0.0.1"))
    try:
        port = int(pick(args.port, "SWITCHBOARD_SFU_PORT", "port", 8787))
    except ValueError:
        sys.exit(
            "sfu port must be an integer (flag --port, env SWITCHBOARD_SFU_PORT or [sfu] port)"
        )
    app_id = str(pick(args.app_id, "SWITCHBOARD_SFU_APP_ID", "app_id", DEV_APP_ID))
    try:
        return SfuConfig.serving(
            host, port, app_id, os.environ.get("SWITCHBOARD_SFU_APP_SECRET") or None
        )
    except ValueError as exc:
        sys.exit(str(exc))


async def serve(config: SfuConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with LocalSFU(config) as sfu:
        print(f"local SFU: {sfu.base_url}  app id: {sfu.app_id}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
