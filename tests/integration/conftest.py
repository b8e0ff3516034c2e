from __future__ import annotations

from pathlib import Path

import pytest

from media.sfu import LocalSFU
from tests.fakes.discord import FakeDiscord, Permission
from tests.support.rtc import Api


@pytest.fixture
async def sfu():
    async with LocalSFU() as server:
        yield server


@pytest.fixture
async def api(sfu):
    client = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
    yield client
    await client.aclose()


def two_guild_config(path: Path) -> Path:
    """No dev guild: commands sync globally, so both servers have them."""
    path.write_text(
        f"""
[sfu]
port = 0

[http]
port = 0

[discord]
sync_globally = true
auto_leave_delay_s = 0.5

[store]
path = "{path.parent / "store.sqlite3"}"
"""
    )
    return path


@pytest.fixture
async def two_guilds(tmp_path):
    async with FakeDiscord() as fake:
        a = fake.add_guild("Owners")
        b = fake.add_guild("Guests")
        worlds = []
        for guild, prefix in ((a, "a"), (b, "b")):
            text = guild.add_text_channel("general")
            voice = guild.add_voice_channel("Lounge")
            guild.add_voice_channel("Stage")  # before the bot connects: in its GUILD_CREATE
            admin = fake.add_member(
                guild, f"{prefix}-admin", roles=[guild.add_role("mods", Permission.MANAGE_CHANNELS)]
            )
            user = fake.add_member(guild, f"{prefix}-user")
            worlds.append((guild, text, voice, admin, user))
        yield fake, worlds, two_guild_config(tmp_path / "config.toml")
