"""The command line: `switchboard` (or `python -m bot`) runs the service (the Procfile's
`web` process); `switchboard invite <room>` prints a link to a room's web page.

Whatever stops a start that the operator can fix (a bad setting, a port in use, a store that
cannot be opened) ends in one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from . import __version__
from .config import (
    GENERATE_SECRET_HINT,
    ROOM_NAME_PATTERN,
    ROOM_NAME_RULES,
    ConfigError,
    Settings,
    config_path,
    load_settings,
)

__all__ = ["EXIT_CONFIG", "EXIT_STARTUP", "build_parser", "main", "parse_duration"]

logger = logging.getLogger(__name__)

EXIT_STARTUP = 1
"""The settings were valid but the service could not start (port, store)."""
EXIT_CONFIG = 2
"""The settings or the command line are wrong (argparse also exits with 2)."""
EXIT_INTERRUPTED = 130
DURATION = re.compile(r"(\d+)([smhd])")
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> int:
    """`90m`, `1h`, `7d` → seconds, within what an invite may last."""
    from .web.tokens import MAX_INVITE_TTL_S

    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and a unit, s, m, h or d (e.g. 1h, 7d)"
        )
    seconds = int(match.group(1)) * DURATION_UNITS_S[match.group(2)]
    if not 0 < seconds <= MAX_INVITE_TTL_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: from 1s to {MAX_INVITE_TTL_S // 86_400}d"
        )
    return seconds


def _room(text: str) -> str:
    if not ROOM_NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a room name: {ROOM_NAME_RULES}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description=(
            "Bridge Discord voice channels into rooms on Cloudflare Realtime (or the embedded "
            "local SFU). Without a command, run the service. Settings come from config.toml "
            "(path from SWITCHBOARD_CONFIG) and SWITCHBOARD_* environment variables; secrets "
            "from the environment only."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    invite = commands.add_parser(
        "invite",
        help="print a link to a room's web page (no Discord needed)",
        description=(
            "Print a link that opens a room's web page, signed with SWITCHBOARD_INVITE_SECRET "
            "(the running service must use the same value) and starting with [http] "
            "public_url. The operator's links may open rooms that no voice channel is "
            "linked to: rooms for the web only."
        ),
    )
    invite.add_argument("room", type=_room, help=f"the room: {ROOM_NAME_RULES}")
    invite.add_argument(
        "--role",
        choices=("speaker", "listener"),
        default="speaker",
        help="speaker (talk and listen, the default) or listener (listen only)",
    )
    invite.add_argument(
        "--expires",
        type=parse_duration,
        default="1h",
        metavar="DURATION",
        help="how long the link works: a number and s, m, h or d (default: 1h; at most 30d)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    if args.command == "invite":
        return _invite(settings, args.room, args.role, args.expires)
    try:
        return _run(settings)
    except KeyboardInterrupt:  # before the service's own signal handlers are in place
        return EXIT_INTERRUPTED


def _fail(message: str) -> None:
    print(f"switchboard: {message}", file=sys.stderr)


def _invite(settings: Settings, room: str, role: str, ttl_s: int) -> int:
    from .web import InviteLinks, Role, TokenSigner

    secret = settings.http.invite_secret
    if secret is None:
        _fail(
            "SWITCHBOARD_INVITE_SECRET is not set: without it the service signs with a random "
            "key of its own, so a link made here would not work; set the same value for the "
            f"service and this command (make one with: {GENERATE_SECRET_HINT})"
        )
        return EXIT_CONFIG
    links = InviteLinks(TokenSigner(secret.get_secret_value()), settings.http.public_url)
    link = links.create(room, Role(role), ttl_s, operator=True)
    until = datetime.fromtimestamp(link.invite.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    # The link alone on stdout (for scripts); what it grants on stderr (for people).
    print(f"{role} invite to room {room}, valid until {until}:", file=sys.stderr)
    print(link.url)
    return 0


def _run(settings: Settings) -> int:
    import stamina

    from .logs import configure_logging
    from .service import Service
    from .startup import StartupError
    from .store import StoreError
    from .voice import VoiceLink

    configure_logging(settings.log_level, settings.log_format)
    path, _ = config_path()
    if path.is_file():
        logger.info("config loaded path=%s", path.resolve())
    else:
        logger.info("config file absent path=%s: defaults and environment only", path.resolve())
    _warn_on_loopback_links(settings)
    # The Realtime client logs its own retries with context; stamina's bare lines are noise.
    stamina.instrumentation.set_on_retry_hooks([])
    service = Service(settings, link_factory=VoiceLink)
    try:
        asyncio.run(service.run_until_signalled())
    except (StartupError, StoreError) as exc:
        _fail(str(exc))
        return EXIT_STARTUP
    return 0


def _warn_on_loopback_links(settings: Settings) -> None:
    """Serving publicly while links point at loopback: links and sockets would fail."""
    from media.sfu.server import LOOPBACK_HOSTS

    link_host = urlsplit(settings.http.public_url).hostname or ""
    if settings.http.host not in LOOPBACK_HOSTS and link_host in LOOPBACK_HOSTS:
        logger.warning(
            "http public_url=%s is a loopback address while HTTP listens on %s: set "
            "SWITCHBOARD_HTTP_PUBLIC_URL to the address people open (invite links start "
            "with it; WebSocket upgrades must come from it)",
            settings.http.public_url,
            settings.http.host,
        )
