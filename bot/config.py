"""`Settings`: the service's one typed, documented, immutable settings object.

Where values come from, highest priority first:

1. **environment variables** — the only source of secrets (`DISCORD_TOKEN`,
   `REALTIME_APP_SECRET`, `TURN_KEY_API_TOKEN`, `SWITCHBOARD_INVITE_SECRET`,
   `SWITCHBOARD_SFU_APP_SECRET`, `DATABASE_URL`, `REDIS_URL`), and an override for every
   other scalar setting (`SWITCHBOARD_<TABLE>_<KEY>`, e.g. `SWITCHBOARD_HTTP_PORT`; the ids
   `REALTIME_APP_ID` and `TURN_KEY_ID` keep Cloudflare's names). Empty variables count as
   unset. A PaaS's `PORT` means HTTP on `0.0.0.0:$PORT`, unless `SWITCHBOARD_HTTP_HOST`/`_PORT`
   say otherwise.
2. **config.toml** (path from `SWITCHBOARD_CONFIG`, default `./config.toml`) — settings and the
   static `[[bridges]]` mappings. A secret written there is refused, never used.
3. the defaults documented on each field.

`load_settings()` is the entry point: it returns a frozen `Settings` or raises `ConfigError`
whose message names, for every problem, the key, the bad value, what is expected and the line
of config.toml (or the environment variable) it came from. Secrets are `SecretStr`: they never
appear in `repr()`, logs or error messages.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from media.sfu.server import LOOPBACK_HOSTS

from .web.tokens import MIN_SECRET_BYTES

__all__ = [
    "CLOUDFLARE_REALTIME_URL",
    "CONFIG_PATH_ENV",
    "DATABASE_URL_SCHEMES",
    "DEFAULT_CONFIG_PATH",
    "MIN_INVITE_SECRET_BYTES",
    "PLATFORM_PORT_ENV",
    "REDIS_URL_SCHEMES",
    "BridgeMapping",
    "BridgeMode",
    "ConfigError",
    "DiscordSettings",
    "HttpSettings",
    "RealtimeSettings",
    "RedisSettings",
    "RoomName",
    "Settings",
    "SfuSettings",
    "Snowflake",
    "StoreSettings",
    "TurnSettings",
    "config_path",
    "describe_missing_token",
    "load_settings",
]

CONFIG_PATH_ENV = "SWITCHBOARD_CONFIG"
DEFAULT_CONFIG_PATH = "config.toml"
CLOUDFLARE_REALTIME_URL = "https://rtc.live.cloudflare.com/v1"
PLATFORM_PORT_ENV = "PORT"
"""The port a PaaS assigns to a `web` process; setting it also makes HTTP listen publicly."""
PUBLIC_HOST = "0.0.0.0"
MIN_INVITE_SECRET_BYTES = MIN_SECRET_BYTES
GENERATE_SECRET_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
DATABASE_URL_SCHEMES = ("postgres", "postgresql")
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")

BridgeMode = Literal["manual", "auto"]
"""manual: the bot bridges on `/join`; auto: it joins when someone arrives, leaves when empty."""

ROOM_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
ROOM_NAME_RULES = "1-64 characters: lowercase letters a-z, digits 0-9, '-' and '_'"


def _room_name(value: str) -> str:
    if not ROOM_NAME_PATTERN.fullmatch(value):
        raise PydanticCustomError("room_name", ROOM_NAME_RULES)
    return value


def _http_url(value: Any) -> str:
    # Validated by pydantic's HttpUrl; kept as a plain string without a trailing slash so that
    # callers can append paths.
    return str(TypeAdapter(HttpUrl).validate_python(value)).rstrip("/")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _long_enough_key(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value().encode()) < MIN_INVITE_SECRET_BYTES:
        raise PydanticCustomError(
            "short_secret",
            "expected at least {minimum} bytes (make one with: {hint})",
            {"minimum": MIN_INVITE_SECRET_BYTES, "hint": GENERATE_SECRET_HINT},
        )
    return value


RoomName = Annotated[str, AfterValidator(_room_name)]
"""A room name: 1-64 characters of `[a-z0-9_-]` (the same rule as `/bridge link`)."""
HttpUrlStr = Annotated[str, BeforeValidator(_http_url)]
Port = Annotated[int, Field(ge=0, le=65535)]
Snowflake = Annotated[int, Field(gt=0, lt=2**63)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_lower)]
InviteKey = Annotated[SecretStr | None, AfterValidator(_long_enough_key)]


def _setting(default: Any, env: str | None, doc: str, **constraints: Any) -> Any:
    """A field whose description names its environment variable and its default."""
    source = f"Env {env}." if env else "config.toml only."
    shown = "none" if default is None else json.dumps(default)
    return Field(
        default,
        description=f"{doc} {source} Default: {shown}.",
        json_schema_extra={"env": env} if env else None,
        **constraints,
    )


def _secret(env: str, doc: str) -> Any:
    """A secret: read from the environment variable `env` only, refused in config.toml."""
    return Field(
        None,
        description=f"{doc} Secret: env {env} only, never config.toml. Default: none.",
        json_schema_extra={"env": env, "secret": True},
    )


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class RealtimeSettings(_Section):
    """`[realtime]`: the Cloudflare Realtime app (used when `backend = "cloudflare"`)."""

    base_url: HttpUrlStr = _setting(
        CLOUDFLARE_REALTIME_URL,
        "SWITCHBOARD_REALTIME_BASE_URL",
        "Realtime API base URL for the cloudflare backend (the local backend uses the "
        "in-process SFU's URL instead).",
    )
    app_id: str | None = _setting(
        None,
        "REALTIME_APP_ID",
        "Cloudflare Realtime app id (not a secret; may also be set here). "
        "Required when backend is cloudflare.",
        min_length=1,
    )
    app_secret: SecretStr | None = _secret(
        "REALTIME_APP_SECRET",
        "Cloudflare Realtime app secret (API token). Required when backend is cloudflare.",
    )


class TurnSettings(_Section):
    """`[turn]`: a Cloudflare TURN key; without one, browsers get the SFU's STUN only."""

    key_id: str | None = _setting(
        None,
        "TURN_KEY_ID",
        "Cloudflare TURN key id (not a secret; may also be set here).",
        min_length=1,
    )
    api_token: SecretStr | None = _secret(
        "TURN_KEY_API_TOKEN", "Cloudflare TURN key API token; required with key_id."
    )


class SfuSettings(_Section):
    """`[sfu]`: the embedded local SFU (the default backend); also read by `python -m media.sfu`."""

    host: str = _setting(
        "127.0.0.1", "SWITCHBOARD_SFU_HOST", "Address the local SFU listens on.", min_length=1
    )
    port: Port = _setting(8787, "SWITCHBOARD_SFU_PORT", "TCP port of the local SFU (0: any free).")
    app_id: str = _setting("local", "SWITCHBOARD_SFU_APP_ID", "App id clients use.", min_length=1)
    app_secret: SecretStr | None = _secret(
        "SWITCHBOARD_SFU_APP_SECRET",
        "App secret of the local SFU; without it a development secret is used, "
        "on a loopback address only.",
    )


class HttpSettings(_Section):
    """`[http]`: health (/live, /ready), /metrics and the web API for browser participants."""

    host: str = _setting(
        "127.0.0.1",
        "SWITCHBOARD_HTTP_HOST",
        f"Address to listen on; {PUBLIC_HOST} when the platform sets {PLATFORM_PORT_ENV}.",
        min_length=1,
    )
    port: Port = _setting(
        8080,
        "SWITCHBOARD_HTTP_PORT",
        f"TCP port (0: any free); a PaaS's {PLATFORM_PORT_ENV} is used when this is not set.",
    )
    public_url: HttpUrlStr = _setting(
        "http://127.0.0.1:8080",
        "SWITCHBOARD_HTTP_PUBLIC_URL",
        "URL browsers reach the web API at; invite links start with it.",
    )
    invite_secret: InviteKey = _secret(
        "SWITCHBOARD_INVITE_SECRET",
        f"Key that signs web invite links, at least {MIN_INVITE_SECRET_BYTES} bytes; without "
        "it a random key is made at each start (links then stop working after a restart), "
        "which only a loopback address may do.",
    )


class DiscordSettings(_Section):
    """`[discord]`: the bot account and its behaviour."""

    token: SecretStr | None = _secret(
        "DISCORD_TOKEN",
        "Bot token; the service starts without it (HTTP and SFU only) and says how to get one.",
    )
    dev_guild_id: Snowflake | None = _setting(
        None,
        "SWITCHBOARD_DISCORD_DEV_GUILD_ID",
        "Development: sync slash commands to this one guild (instant) instead of globally.",
    )
    sync_globally: bool = _setting(
        False,
        "SWITCHBOARD_DISCORD_SYNC_GLOBALLY",
        "Without dev_guild_id, sync slash commands globally at start: set it once after adding "
        "or changing commands (global sync is rate-limited and takes time to propagate).",
    )
    auto_leave_delay_s: float = _setting(
        30.0,
        "SWITCHBOARD_DISCORD_AUTO_LEAVE_DELAY_S",
        "Seconds an auto-mode channel stays bridged after its last person leaves.",
        ge=0,
        allow_inf_nan=False,
    )
    moderator_role_id: Snowflake | None = _setting(
        None,
        "SWITCHBOARD_DISCORD_MODERATOR_ROLE_ID",
        "Members with this role may moderate web participants (`/web ...`) besides admins "
        "(Manage Channels); the same role id in every server is unlikely, so usually unset.",
    )


def _database_url(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    scheme, _, rest = value.get_secret_value().partition("://")
    if scheme not in DATABASE_URL_SCHEMES or not rest:
        # The value carries a password: the message never repeats it.
        raise PydanticCustomError(
            "database_url", "expected a postgres://user:password@host:port/database URL"
        )
    return value


class StoreSettings(_Section):
    """`[store]`: where mappings, rooms, shares and invites are kept."""

    path: Path = _setting(
        "var/switchboard.sqlite3",
        "SWITCHBOARD_STORE_PATH",
        "SQLite file, used when DATABASE_URL is not set (relative paths are relative to the "
        "working directory; its directory is created).",
    )
    database_url: Annotated[SecretStr | None, AfterValidator(_database_url)] = _secret(
        "DATABASE_URL",
        "Postgres to keep the store in (postgres://user:password@host:port/database) instead "
        "of the SQLite file.",
    )


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    scheme, _, rest = value.get_secret_value().partition("://")
    try:
        urlsplit(value.get_secret_value()).port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        rest = ""
    if scheme not in REDIS_URL_SCHEMES or not rest:
        # The value may carry a password: the message never repeats it.
        raise PydanticCustomError(
            "redis_url", "expected a redis://[:password@]host:port/db (or rediss://) URL"
        )
    return value


class RedisSettings(_Section):
    """`[redis]`: the shared room directory, for running more than one process."""

    url: Annotated[SecretStr | None, AfterValidator(_redis_url)] = _secret(
        "REDIS_URL",
        "Redis to keep the room directory in (redis://[:password@]host:port/db), shared by "
        "every process that uses it, instead of this process's memory.",
    )
    member_expiry_s: float = _setting(
        10.0,
        "SWITCHBOARD_REDIS_MEMBER_EXPIRY_S",
        "Seconds within which the room members of a process that died are removed (and "
        "announced) by the others; each process refreshes its own well within it.",
        gt=0,
        allow_inf_nan=False,
    )


class BridgeMapping(_Section):
    """One `[[bridges]]` entry: a voice channel statically linked to a room."""

    guild_id: Snowflake = Field(description="Discord server (guild) id.")
    channel_id: Snowflake = Field(description="Voice channel id.")
    room: RoomName = Field(description=f"Room name: {ROOM_NAME_RULES}.")
    mode: BridgeMode = Field(
        "manual",
        description='"manual" (bridge on /join) or "auto" (join when someone arrives). '
        'Default: "manual".',
    )


def _combination_error(kind: str, message: str, *, key: str, cause: str, **ctx: Any) -> Exception:
    """A rule across settings: `key` is the setting at fault, `cause` the one whose line shows."""
    return PydanticCustomError(kind, message, {"key": key, "cause": cause, **ctx})


class Settings(BaseSettings):
    """Everything the service is configured with. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    backend: Literal["local", "cloudflare"] = _setting(
        "local",
        "SWITCHBOARD_BACKEND",
        'Media backend: "local" (the embedded SFU) or "cloudflare" (Cloudflare Realtime).',
    )
    log_level: LogLevel = _setting(
        "INFO", "SWITCHBOARD_LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    log_format: LogFormat = _setting(
        "text",
        "SWITCHBOARD_LOG_FORMAT",
        '"text" (one readable line per record) or "json" (one JSON object per line).',
    )
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings, description="[realtime]")
    turn: TurnSettings = Field(default_factory=TurnSettings, description="[turn]")
    sfu: SfuSettings = Field(default_factory=SfuSettings, description="[sfu]")
    http: HttpSettings = Field(default_factory=HttpSettings, description="[http]")
    discord: DiscordSettings = Field(default_factory=DiscordSettings, description="[discord]")
    store: StoreSettings = Field(default_factory=StoreSettings, description="[store]")
    redis: RedisSettings = Field(default_factory=RedisSettings, description="[redis]")
    bridges: tuple[BridgeMapping, ...] = _setting(
        (), None, "Static channel-to-room mappings, one [[bridges]] table each."
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.backend == "cloudflare":
            missing = [
                (key, env)
                for key, env, value in (
                    ("realtime.app_id", "REALTIME_APP_ID", self.realtime.app_id),
                    ("realtime.app_secret", "REALTIME_APP_SECRET", self.realtime.app_secret),
                )
                if value is None
            ]
            if missing:
                raise _combination_error(
                    "cloudflare_credentials",
                    'missing, and required when backend is "cloudflare": set {env} in the '
                    "environment (Cloudflare dashboard → Realtime → your app)",
                    key=" and ".join(key for key, _ in missing),
                    cause="backend",
                    env=" and ".join(env for _, env in missing),
                )
        if (self.turn.key_id is None) != (self.turn.api_token is None):
            raise _combination_error(
                "turn_key_pair",
                "TURN_KEY_ID and TURN_KEY_API_TOKEN go together: set both or neither",
                key="turn.api_token" if self.turn.api_token is None else "turn.key_id",
                cause="turn.key_id",
            )
        if (
            self.backend == "local"
            and self.sfu.app_secret is None
            and self.sfu.host not in LOOPBACK_HOSTS
        ):
            raise _combination_error(
                "sfu_dev_secret",
                "missing: the development secret is only used on a loopback address; set "
                "SWITCHBOARD_SFU_APP_SECRET to serve on {host}",
                key="sfu.app_secret",
                cause="sfu.host",
                host=self.sfu.host,
            )
        if self.http.invite_secret is None and self.http.host not in LOOPBACK_HOSTS:
            raise _combination_error(
                "public_without_invite_secret",
                "missing: HTTP listens on {host}, a public address, so invite links must "
                "outlive a restart: set SWITCHBOARD_INVITE_SECRET to at least {minimum} random "
                "bytes, the same value at every start (make one with: {hint})",
                key="http.invite_secret",
                cause="http.host",
                host=self.http.host,
                minimum=MIN_INVITE_SECRET_BYTES,
                hint=GENERATE_SECRET_HINT,
            )
        seen: dict[tuple[int, int], int] = {}
        for index, bridge in enumerate(self.bridges):
            first = seen.setdefault((bridge.guild_id, bridge.channel_id), index)
            if first != index:
                raise _combination_error(
                    "duplicate_bridge",
                    "guild {guild} channel {channel} is already mapped by [[bridges]] #{first} "
                    "(one room per voice channel)",
                    key=f"bridges.{index}.channel_id",
                    cause=f"bridges.{index}.channel_id",
                    guild=bridge.guild_id,
                    channel=bridge.channel_id,
                    first=first + 1,
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings()` reads os.environ and `$SWITCHBOARD_CONFIG`; prefer `load_settings()`."""
        path, explicit = config_path(environ=os.environ)
        return (
            init_settings,
            _EnvSource(settings_cls, os.environ),
            _TomlSource(settings_cls, _TomlDocument.read(path, required=explicit)),
        )


# -- sources ----------------------------------------------------------------------------------


def _env_fields(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """(key path, env variable, is secret) for every field that has an env variable."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if isinstance(extra.get("env"), str):
            yield (*prefix, name), str(extra["env"]), bool(extra.get("secret"))
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _env_fields(info.annotation, (*prefix, name))


ENV_VARIABLES: dict[tuple[str, ...], str] = {path: env for path, env, _ in _env_fields(Settings)}
"""Key path → environment variable, for every setting that has one."""
SECRET_VARIABLES: dict[tuple[str, ...], str] = {
    path: env for path, env, secret in _env_fields(Settings) if secret
}
"""Key path → environment variable, for the secrets (env only)."""

_SECRET_NAME = re.compile(
    r"(secret|token|password|passwd|private|credential|api_key)", re.IGNORECASE
)


class _EnvSource(PydanticBaseSettingsSource):
    """The documented environment variables, as a nested dict; empty ones count as unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        self.origins: dict[tuple[str, ...], str] = {}
        for path, env in ENV_VARIABLES.items():
            value = environ.get(env, "").strip()
            if not value:
                continue
            node = self.values
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
            self.origins[path] = env
        self._platform_port(environ)

    def _platform_port(self, environ: Mapping[str, str]) -> None:
        """A PaaS routes its traffic to `$PORT` on every interface; explicit settings win."""
        port = environ.get(PLATFORM_PORT_ENV, "").strip()
        if not port:
            return
        http = self.values.setdefault("http", {})
        for key, value in (("port", port), ("host", PUBLIC_HOST)):
            if key not in http:
                http[key] = value
                self.origins[("http", key)] = PLATFORM_PORT_ENV

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], document: _TomlDocument) -> None:
        super().__init__(settings_cls)
        self.document = document

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.document.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.document.data


class ConfigError(Exception):
    """Settings could not be loaded; `str(error)` is a human-readable report: one line for
    one problem, else the summary and a line per problem."""

    def __init__(self, summary: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        self.summary = summary
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{summary}: {self.problems[0]}"
        else:
            text = "\n".join([summary, *(f"  - {p}" for p in self.problems)])
        super().__init__(text)


class _TomlDocument:
    """A parsed config.toml plus where each table and key is (for error messages)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        try:
            self.data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib's message ends with "(at line N, column M)".
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        self.lines = _index_lines(text)

    @classmethod
    def read(cls, path: Path, *, required: bool) -> _TomlDocument:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if required:
                raise ConfigError(
                    f"{path}: config file not found (set by {CONFIG_PATH_ENV} or the caller)"
                ) from None
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        document = cls(path, text)
        document.refuse_secrets()
        return document

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """The line of the most specific table or key along `loc` that the file spells out."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(str(part) for part in loc[:end]))
            if line is not None:
                return line
        return None

    def refuse_secrets(self) -> None:
        problems = []
        for loc, value in _walk(self.data):
            name = str(loc[-1])
            env = SECRET_VARIABLES.get(tuple(str(p) for p in loc))
            if env is None:
                env = next(
                    (e for e in SECRET_VARIABLES.values() if e.lower() == name.lower()), None
                )
            if env is None and not (_SECRET_NAME.search(name) and isinstance(value, str)):
                continue
            where = _where(self, loc)
            if env is not None:
                problems.append(
                    f"{where}: {_key_label(loc)} is a secret and is never read from config.toml: "
                    f"delete it there and set the environment variable {env} instead"
                )
            else:
                problems.append(
                    f"{where}: {_key_label(loc)} looks like a secret, and config.toml holds no "
                    f"secrets: delete it (secrets come from the environment variables "
                    f"{', '.join(sorted(SECRET_VARIABLES.values()))})"
                )
        if problems:
            raise ConfigError(f"{self.path}: secrets found in the config file", problems)


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*="""
)
_KEY_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in _KEY_PART.findall(dotted))


def _index_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table header and key path to its 1-based line.

    `[[bridges]]` entries are numbered from 0, so ("bridges", "1", "mode") is the `mode` key of
    the second `[[bridges]]` table. A line-oriented scan is enough for error messages: it skips
    the inside of multi-line strings; keys inside inline tables map to their outer key's line.
    """
    index: dict[tuple[str, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header:
            path = _key_parts(header.group(2))
            if header.group(1) == "[[":
                counts[path] = counts.get(path, -1) + 1
                table = (*path, str(counts[path]))
                index.setdefault(path, number)
            else:
                table = path
            index.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            index.setdefault((*table, *_key_parts(key.group(1))), number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
                break
    return index


def _walk(
    data: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*loc, key), value
            yield from _walk(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _walk(value, (*loc, index))


# -- error messages ---------------------------------------------------------------------------


def _key_label(loc: tuple[str | int, ...]) -> str:
    """`http.port`, `bridges #2 mode` (array entries count from 1, as a reader does)."""
    label = ""
    for part in loc:
        if isinstance(part, int) or part.isdigit():
            label += f" #{int(part) + 1}"
        elif not label:
            label = part
        else:
            label += (" " if label[-1].isdigit() else ".") + part
    return label


def _where(document: _TomlDocument, loc: tuple[str | int, ...]) -> str:
    line = document.line_of(loc)
    return f"{document.path}, line {line}" if line is not None else f"{document.path}"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"a {'table' if isinstance(value, dict) else 'list'}"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _expectation(error: ErrorDetails) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return "this required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            return "expected " + message[len(prefix) :]
    if kind == "room_name":
        return "expected " + message
    return message


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        if getattr(annotation, "__origin__", None) is tuple:
            annotation = annotation.__args__[0]
        model = annotation
    prefix = tuple(str(p) for p in loc[:-1] if not isinstance(p, int))
    return sorted(
        name
        for name in getattr(model, "model_fields", {})
        if (*prefix, name) not in SECRET_VARIABLES
    )


def _describe(
    error: ErrorDetails, document: _TomlDocument, origins: Mapping[tuple[str, ...], str]
) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if "key" in ctx and "cause" in ctx:  # a rule across settings: see Settings._check_combinations
        cause = tuple(int(p) if p.isdigit() else p for p in str(ctx["cause"]).split("."))
        env = origins.get(tuple(str(p) for p in cause))
        place = f"environment variable {env}" if env else _where(document, cause)
        return f"{place}: {_key_label(tuple(str(ctx['key']).split('.')))}: {error['msg']}"
    env = origins.get(tuple(str(p) for p in loc))
    secret = tuple(str(p) for p in loc) in SECRET_VARIABLES
    value = "(hidden)" if secret else _show(error.get("input"))
    expected = _expectation(error)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        if allowed:
            expected += f"; expected one of: {', '.join(allowed)}"
        return f"{_where(document, loc)}: {_key_label(loc)}: {expected}"
    if error["type"] == "missing":
        return f"{_where(document, loc)}: {_key_label(loc)}: {expected}"
    place = f"environment variable {env}" if env else _where(document, loc)
    return f"{place}: {_key_label(loc)} = {value}: {expected}"


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top, table by table (an env variable replaces one key)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- entry points -----------------------------------------------------------------------------


def config_path(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The config file `load_settings` reads, and whether it was named (so must exist)."""
    environ = os.environ if environ is None else environ
    if path is not None:
        return Path(path), True
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV]), True
    return Path(DEFAULT_CONFIG_PATH), False


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate the settings; raise `ConfigError` listing every problem.

    `path` defaults to `$SWITCHBOARD_CONFIG`, else `./config.toml`; a missing file is an error
    only when its path was given explicitly (otherwise the defaults apply). `environ` defaults
    to `os.environ`.
    """
    environ = os.environ if environ is None else environ
    file, explicit = config_path(path, environ)
    document = _TomlDocument.read(file, required=explicit)
    env = _EnvSource(Settings, environ)
    try:
        # The same sources as `Settings()` uses, but with the caller's path and environment.
        return Settings.model_validate(_merge(document.data, env.values))
    except ValidationError as exc:
        problems = [_describe(e, document, env.origins) for e in exc.errors()]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise ConfigError(f"{file}: invalid settings ({count})", problems) from None


def describe_missing_token() -> str:
    """What to tell an operator who started the service without `DISCORD_TOKEN`."""
    return (
        "No Discord bot token: the environment variable DISCORD_TOKEN is not set, so the bot\n"
        "stays offline (the HTTP API and the local SFU still run). To get a token:\n"
        "  1. Open the Discord Developer Portal (https://discord.com/developers/applications)\n"
        "     and pick your application (or create one) under Applications.\n"
        "  2. In Bot, press Reset Token and copy the token (it is shown once).\n"
        "  3. Invite the bot to your server: OAuth2 → URL Generator, scopes 'bot' and\n"
        "     'applications.commands', bot permissions Connect, Speak and Use Voice Activity;\n"
        "     open the generated URL.\n"
        "  4. Set DISCORD_TOKEN=<token> in the service's environment (never in config.toml)\n"
        "     and restart."
    )
