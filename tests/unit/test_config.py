"""bot/config.py: sources, secrets, and error messages that point at the line to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from bot.config import (
    CLOUDFLARE_REALTIME_URL,
    BridgeMapping,
    ConfigError,
    Settings,
    describe_missing_token,
    load_settings,
)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
KEY = "k" * 32
"""An invite secret of the shortest accepted length."""

SECRETS = {
    "DISCORD_TOKEN": "discord-token-sentinel-1",
    "REALTIME_APP_SECRET": "realtime-secret-sentinel-2",
    "TURN_KEY_API_TOKEN": "turn-token-sentinel-3",
    "SWITCHBOARD_INVITE_SECRET": "invite-secret-sentinel-4-at-least-32-bytes",
    "SWITCHBOARD_SFU_APP_SECRET": "sfu-secret-sentinel-5",
    "DATABASE_URL": "postgres://app:db-password-sentinel-6@db.internal:5432/switchboard",
    "REDIS_URL": "redis://:redis-password-sentinel-7@cache.internal:6379/0",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ or {})
    return str(caught.value)


# -- defaults and sources ---------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_defaults_when_no_config_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ./config.toml absent: the defaults apply
    settings = load_settings(environ={})
    assert settings.backend == "local"
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert (settings.sfu.host, settings.sfu.port, settings.sfu.app_id) == (
        "127.0.0.1",
        8787,
        "local",
    )
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.http.public_url == "http://127.0.0.1:8080"
    assert settings.realtime.base_url == CLOUDFLARE_REALTIME_URL
    assert settings.realtime.app_id is None and settings.realtime.app_secret is None
    assert settings.discord.token is None
    assert settings.discord.dev_guild_id is None
    assert settings.discord.auto_leave_delay_s == 30.0
    assert settings.store.path == Path("var/switchboard.sqlite3")
    assert settings.bridges == ()


@pytest.mark.timeout(10)
def test_the_repository_config_toml_loads() -> None:
    settings = load_settings(REPO_CONFIG, {})
    assert (settings.sfu.host, settings.sfu.port, settings.sfu.app_id) == (
        "127.0.0.1",
        8787,
        "local",
    )


@pytest.mark.timeout(10)
def test_the_commented_examples_in_config_toml_are_valid(tmp_path: Path) -> None:
    setting = re.compile(r"^# ((\[\[?[a-z_]+\]\]?)|([a-z_]+ = .*))$")
    original = REPO_CONFIG.read_text().splitlines()
    lines = [setting.sub(r"\1", line) for line in original]
    assert sum(1 for a, b in zip(lines, original, strict=True) if a != b) > 15
    settings = load_settings(write(tmp_path, "\n".join(lines)), {"TURN_KEY_API_TOKEN": "t"})
    assert settings.bridges == (
        BridgeMapping(guild_id=123456789012345678, channel_id=234567890123456789, room="lobby"),
    )
    assert settings.discord.dev_guild_id == 123456789012345678


@pytest.mark.timeout(10)
def test_config_path_comes_from_switchboard_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 9001\n")
    assert load_settings(environ={"SWITCHBOARD_CONFIG": str(path)}).http.port == 9001


@pytest.mark.timeout(10)
def test_a_config_file_named_explicitly_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings(missing, {})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(environ={"SWITCHBOARD_CONFIG": str(missing)})


@pytest.mark.timeout(10)
def test_full_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
backend = "cloudflare"
log_level = "debug"
[realtime]
app_id = "abc123"
[http]
host = "0.0.0.0"
port = 8443
public_url = "https://switchboard.example.org/"
[discord]
dev_guild_id = 1100000000000000001
auto_leave_delay_s = 5
[store]
path = "/srv/switchboard/mappings.db"
[[bridges]]
guild_id = 1100000000000000001
channel_id = 1200000000000000001
room = "lobby"
[[bridges]]
guild_id = 1100000000000000002
channel_id = 1200000000000000002
room = "lobby"
mode = "auto"
""",
    )
    settings = load_settings(path, {"REALTIME_APP_SECRET": "s", "SWITCHBOARD_INVITE_SECRET": KEY})
    assert settings.backend == "cloudflare"
    assert settings.log_level == "DEBUG"
    assert settings.realtime.app_id == "abc123"
    assert settings.http.public_url == "https://switchboard.example.org"
    assert settings.discord.dev_guild_id == 1100000000000000001
    assert settings.discord.auto_leave_delay_s == 5.0
    assert settings.store.path == Path("/srv/switchboard/mappings.db")
    assert [(b.room, b.mode) for b in settings.bridges] == [("lobby", "manual"), ("lobby", "auto")]


@pytest.mark.timeout(10)
def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    environ = {**SECRETS, "REALTIME_APP_ID": "app-1", "TURN_KEY_ID": "key-1"}
    settings = load_settings(write(tmp_path, 'backend = "cloudflare"\n'), environ)
    assert settings.discord.token == SecretStr(SECRETS["DISCORD_TOKEN"])
    assert settings.realtime.app_id == "app-1"
    assert settings.realtime.app_secret == SecretStr(SECRETS["REALTIME_APP_SECRET"])
    assert settings.turn.key_id == "key-1"
    assert settings.turn.api_token == SecretStr(SECRETS["TURN_KEY_API_TOKEN"])
    assert settings.http.invite_secret == SecretStr(SECRETS["SWITCHBOARD_INVITE_SECRET"])
    assert settings.sfu.app_secret == SecretStr(SECRETS["SWITCHBOARD_SFU_APP_SECRET"])
    assert settings.store.database_url == SecretStr(SECRETS["DATABASE_URL"])
    assert settings.redis.url == SecretStr(SECRETS["REDIS_URL"])


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "url", ["mysql://u:pw-sentinel@h/db", "pw-sentinel", "postgres://", "sqlite:///pw-sentinel"]
)
def test_a_database_url_that_is_not_postgres_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    message = error_for(tmp_path, "", {"DATABASE_URL": url})
    assert "environment variable DATABASE_URL: store.database_url = (hidden)" in message
    assert "expected a postgres://" in message
    assert "pw-sentinel" not in message


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "url", ["http://:pw-sentinel@h:6379", "pw-sentinel", "redis://", "redis://:pw-sentinel@h:x/0"]
)
def test_a_redis_url_that_is_not_redis_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    message = error_for(tmp_path, "", {"REDIS_URL": url})
    assert "environment variable REDIS_URL: redis.url = (hidden)" in message
    assert "expected a redis://" in message
    assert "pw-sentinel" not in message


@pytest.mark.timeout(10)
def test_the_directory_is_in_memory_unless_redis_url_is_set(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[redis]\nmember_expiry_s = 4\n"), {})
    assert settings.redis.url is None
    assert settings.redis.member_expiry_s == 4.0
    message = error_for(tmp_path, "", {"SWITCHBOARD_REDIS_MEMBER_EXPIRY_S": "0"})
    assert "SWITCHBOARD_REDIS_MEMBER_EXPIRY_S" in message


@pytest.mark.timeout(10)
def test_without_database_url_the_store_is_the_sqlite_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[store]\npath = "/tmp/x.db"\n'), {})
    assert settings.store.database_url is None
    assert settings.store.path == Path("/tmp/x.db")


@pytest.mark.timeout(10)
def test_environment_overrides_the_file_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[sfu]\nhost = "127.0.0.1"\nport = 8787\n[http]\nhost = "0.0.0.0"\n')
    environ = {
        "SWITCHBOARD_SFU_PORT": "9797",
        "SWITCHBOARD_HTTP_PORT": "9090",
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_DISCORD_DEV_GUILD_ID": "42",
        "SWITCHBOARD_STORE_PATH": "/tmp/x.db",
        "DISCORD_TOKEN": "   ",  # blank counts as unset
        "SWITCHBOARD_INVITE_SECRET": KEY,
    }
    settings = load_settings(path, environ)
    assert (settings.sfu.host, settings.sfu.port) == ("127.0.0.1", 9797)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9090)
    assert settings.log_level == "WARNING"
    assert settings.discord.dev_guild_id == 42
    assert settings.store.path == Path("/tmp/x.db")
    assert settings.discord.token is None


@pytest.mark.timeout(10)
def test_settings_constructor_reads_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(write(tmp_path, "[http]\nport = 9100\n")))
    monkeypatch.setenv("DISCORD_TOKEN", "from-env")
    settings = Settings()
    assert settings.http.port == 9100
    assert settings.discord.token is not None
    assert settings.discord.token.get_secret_value() == "from-env"


@pytest.mark.timeout(10)
def test_settings_are_immutable() -> None:
    settings = load_settings(REPO_CONFIG, {})
    with pytest.raises(ValidationError):
        settings.backend = "cloudflare"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.http.port = 1  # type: ignore[misc]
    assert isinstance(settings.bridges, tuple)


@pytest.mark.timeout(10)
def test_every_field_documents_its_environment_variable_and_default() -> None:
    def leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
        found = []
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found += leaves(annotation, f"{prefix}{name}.")
            else:
                found.append((f"{prefix}{name}", info.description or ""))
        return found

    for key, description in leaves(Settings):
        assert re.search(r"(Env [A-Z_]+\.|env [A-Z_]+ only|config\.toml only)", description), key
        assert "Default: " in description, key
    for name, info in BridgeMapping.model_fields.items():
        assert info.description, name


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("table", "key", "env"),
    [
        ("discord", "token", "DISCORD_TOKEN"),
        ("realtime", "app_secret", "REALTIME_APP_SECRET"),
        ("turn", "api_token", "TURN_KEY_API_TOKEN"),
        ("http", "invite_secret", "SWITCHBOARD_INVITE_SECRET"),
        ("sfu", "app_secret", "SWITCHBOARD_SFU_APP_SECRET"),
        ("store", "database_url", "DATABASE_URL"),
        ("redis", "url", "REDIS_URL"),
    ],
)
def test_a_secret_in_the_file_is_refused(tmp_path: Path, table: str, key: str, env: str) -> None:
    text = f'# settings\n[{table}]\n{key} = "leaked-sentinel"\n'
    message = error_for(tmp_path, text, {env: "the-real-one"})
    assert f"line 3: {table}.{key} is a secret" in message
    assert f"set the environment variable {env}" in message
    assert "leaked-sentinel" not in message


@pytest.mark.timeout(10)
def test_secret_looking_keys_are_refused_without_echoing_them(tmp_path: Path) -> None:
    # (the last key sits in [http]: TOML tables run to the next header)
    message = error_for(
        tmp_path, '[http]\nport = 1\npassword = "hunter2"\n\nDISCORD_TOKEN = "x1"\n'
    )
    assert "line 3: http.password looks like a secret" in message
    assert "line 5: http.DISCORD_TOKEN is a secret" in message
    assert "DISCORD_TOKEN instead" in message
    assert "hunter2" not in message and "x1" not in message


@pytest.mark.timeout(10)
def test_secrets_never_appear_in_repr_str_or_dumps(tmp_path: Path) -> None:
    environ = {**SECRETS, "TURN_KEY_ID": "k"}
    settings = load_settings(write(tmp_path, ""), environ)
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text
    assert "**********" in repr(settings)


@pytest.mark.timeout(10)
def test_secrets_never_appear_in_error_messages(tmp_path: Path) -> None:
    environ = {**SECRETS, "SWITCHBOARD_HTTP_PORT": "nope"}
    message = error_for(tmp_path, '[http]\nhost = ""\n', environ)
    assert "SWITCHBOARD_HTTP_PORT" in message
    for secret in SECRETS.values():
        assert secret not in message


# -- error messages -----------------------------------------------------------------------------

BAD_VALUES = [
    pytest.param(
        '[sfu]\nhost = "127.0.0.1"\nport = "abc"\n',
        'line 3: sfu.port = "abc": expected a valid integer',
        id="port",
    ),
    pytest.param(
        "[http]\n\nport = 70000\n",
        "line 3: http.port = 70000: expected less than or equal to 65535",
        id="port-range",
    ),
    pytest.param(
        '[[bridges]]\nguild_id = 1\nchannel_id = 2\nroom = "lobby"\nmode = "sometimes"\n',
        "line 5: bridges #1 mode = \"sometimes\": expected 'manual' or 'auto'",
        id="mode",
    ),
    pytest.param(
        '[[bridges]]\nguild_id = 1\nchannel_id = 2\nroom = "Bad Room!"\n',
        'line 4: bridges #1 room = "Bad Room!": expected 1-64 characters: lowercase letters',
        id="room",
    ),
    pytest.param(
        'backend = "aws"\n',
        "line 1: backend = \"aws\": expected 'local' or 'cloudflare'",
        id="backend",
    ),
    pytest.param(
        '\nlog_level = "loud"\n',
        "line 2: log_level = \"LOUD\": expected 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
        id="log-level",
    ),
    pytest.param(
        '[http]\npublic_url = "switchboard.example.org"\n',
        'line 2: http.public_url = "switchboard.example.org": expected a valid URL',
        id="url",
    ),
    pytest.param(
        "[discord]\nauto_leave_delay_s = -1\n",
        "line 2: discord.auto_leave_delay_s = -1: expected greater than or equal to 0",
        id="delay",
    ),
    pytest.param(
        '[[bridges]]\nguild_id = "first"\nchannel_id = 2\nroom = "a"\n',
        'line 2: bridges #1 guild_id = "first": expected a valid integer',
        id="snowflake",
    ),
    pytest.param(
        "[http]\nprot = 8080\n",
        "line 2: http.prot: unknown key; expected one of: host, port, public_url",
        id="unknown-key",
    ),
    pytest.param(
        '[sfu]\nport = 1\n[[bridges]]\nguild_id = 1\nroom = "a"\n',
        "line 3: bridges #1 channel_id: this required key is missing",
        id="missing-key",
    ),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("text", "expected"), BAD_VALUES)
def test_a_bad_value_names_key_value_expectation_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_for(tmp_path, text)
    assert f"{tmp_path / 'config.toml'}, {expected}" in message, message


@pytest.mark.timeout(10)
def test_errors_in_the_second_bridges_entry_point_at_its_lines(tmp_path: Path) -> None:
    text = """\
[sfu]
port = 8787

[[bridges]]
guild_id = 1
channel_id = 2
room = "lobby"
mode = "auto"

[[bridges]]   # the second one
guild_id = 1
channel_id = 3
room = "Bad Room!"
mode = "sometimes"
"""
    message = error_for(tmp_path, text)
    assert "invalid settings (2 problems)" in message
    assert 'line 13: bridges #2 room = "Bad Room!"' in message
    assert "line 14: bridges #2 mode = \"sometimes\": expected 'manual' or 'auto'" in message


@pytest.mark.timeout(10)
def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[sfu]\nport = 8787\n", {"SWITCHBOARD_SFU_PORT": "abc"})
    assert (
        'environment variable SWITCHBOARD_SFU_PORT: sfu.port = "abc": expected a valid integer'
        in message
    )


@pytest.mark.timeout(10)
def test_cloudflare_backend_without_its_secret(tmp_path: Path) -> None:
    text = '# prod\n\nbackend = "cloudflare"\n[realtime]\napp_id = "abc"\n'
    message = error_for(tmp_path, text)
    assert "line 3: realtime.app_secret: missing" in message
    assert 'required when backend is "cloudflare"' in message
    assert "REALTIME_APP_SECRET" in message
    settings = load_settings(tmp_path / "config.toml", {"REALTIME_APP_SECRET": "s"})
    assert settings.realtime.app_secret == SecretStr("s")


@pytest.mark.timeout(10)
def test_cloudflare_backend_chosen_by_environment_without_credentials(tmp_path: Path) -> None:
    message = error_for(tmp_path, "", {"SWITCHBOARD_BACKEND": "cloudflare"})
    assert (
        "environment variable SWITCHBOARD_BACKEND: realtime.app_id and realtime.app_secret"
        in message
    )
    assert "REALTIME_APP_ID and REALTIME_APP_SECRET" in message


@pytest.mark.timeout(10)
def test_turn_key_id_and_token_go_together(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[turn]\nkey_id = "k"\n')
    assert "line 2: turn.api_token: TURN_KEY_ID and TURN_KEY_API_TOKEN go together" in message


@pytest.mark.timeout(10)
def test_local_sfu_off_loopback_needs_a_secret(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[sfu]\nhost = "0.0.0.0"\n')
    assert "line 2: sfu.app_secret: missing" in message
    assert "SWITCHBOARD_SFU_APP_SECRET" in message
    settings = load_settings(tmp_path / "config.toml", {"SWITCHBOARD_SFU_APP_SECRET": "s"})
    assert settings.sfu.host == "0.0.0.0"


@pytest.mark.timeout(10)
def test_one_room_per_channel_in_bridges(tmp_path: Path) -> None:
    entry = '[[bridges]]\nguild_id = 1\nchannel_id = 2\nroom = "{}"\n'
    message = error_for(tmp_path, entry.format("a") + entry.format("b"))
    assert (
        "line 7: bridges #2 channel_id: guild 1 channel 2 is already mapped by [[bridges]] #1"
        in message
    )


@pytest.mark.timeout(10)
def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[sfu]\nport = 8787\n[http\nport = 1\n")
    assert "not valid TOML" in message
    assert "line 3" in message


@pytest.mark.timeout(10)
def test_describe_missing_token_explains_how_to_get_one() -> None:
    text = describe_missing_token()
    for needle in (
        "DISCORD_TOKEN",
        "Developer Portal",
        "Applications",
        "Bot",
        "Reset Token",
        "bot",
        "applications.commands",
        "Connect",
        "Speak",
        "Use Voice Activity",
    ):
        assert needle in text


# -- a PaaS process, the invite key, the log format ------------------------------------------------


@pytest.mark.timeout(10)
def test_platform_port_serves_http_on_every_interface(tmp_path: Path) -> None:
    environ = {"PORT": "28321", "SWITCHBOARD_INVITE_SECRET": KEY}
    settings = load_settings(write(tmp_path, ""), environ)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 28321)


@pytest.mark.timeout(10)
def test_platform_port_beats_the_file_but_not_explicit_variables(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nhost = "127.0.0.1"\nport = 8080\n')
    settings = load_settings(path, {"PORT": "28321", "SWITCHBOARD_INVITE_SECRET": KEY})
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 28321)
    environ = {"PORT": "28321", "SWITCHBOARD_HTTP_HOST": "127.0.0.1", "SWITCHBOARD_HTTP_PORT": "9"}
    settings = load_settings(path, environ)
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9)


@pytest.mark.timeout(10)
def test_a_bad_platform_port_names_the_variable(tmp_path: Path) -> None:
    message = error_for(tmp_path, "", {"PORT": "http", "SWITCHBOARD_INVITE_SECRET": KEY})
    assert 'environment variable PORT: http.port = "http": expected a valid integer' in message


@pytest.mark.timeout(10)
def test_public_http_without_a_persistent_invite_secret_is_refused(tmp_path: Path) -> None:
    message = error_for(tmp_path, "", {"PORT": "28321"})
    assert "environment variable PORT: http.invite_secret: missing" in message
    assert "set SWITCHBOARD_INVITE_SECRET" in message
    message = error_for(tmp_path, '[http]\nhost = "0.0.0.0"\n')
    assert "line 2: http.invite_secret: missing: HTTP listens on 0.0.0.0" in message


@pytest.mark.timeout(10)
def test_loopback_http_may_use_a_random_invite_key(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), {}).http.invite_secret is None


@pytest.mark.timeout(10)
def test_a_short_invite_secret_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    short = "s" * 31
    message = error_for(tmp_path, "", {"SWITCHBOARD_INVITE_SECRET": short})
    assert "\n" not in message  # one problem, one line
    assert (
        "environment variable SWITCHBOARD_INVITE_SECRET: http.invite_secret = (hidden): "
        "expected at least 32 bytes"
    ) in message
    assert short not in message
    # Bytes, not characters: 16 two-byte characters are enough.
    assert load_settings(write(tmp_path, ""), {"SWITCHBOARD_INVITE_SECRET": "é" * 16})


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", ["json", "JSON", "text"])
def test_log_format(tmp_path: Path, value: str) -> None:
    settings = load_settings(write(tmp_path, ""), {"SWITCHBOARD_LOG_FORMAT": value})
    assert settings.log_format == value.lower()


@pytest.mark.timeout(10)
def test_a_bad_log_format_names_the_variable(tmp_path: Path) -> None:
    message = error_for(tmp_path, "", {"SWITCHBOARD_LOG_FORMAT": "xml"})
    assert 'environment variable SWITCHBOARD_LOG_FORMAT: log_format = "xml"' in message
