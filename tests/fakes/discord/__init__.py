"""A protocol-level fake Discord for tests: REST, gateway v10, voice gateway v8 over TLS,
voice UDP with `aead_xchacha20_poly1305_rtpsize`, and DAVE with the fake as MLS external sender.
Real discord.py 2.7.1 (and discord-ext-voice-recv) talk to it unmodified, on 127.0.0.1.

Pointing a bot at it::

    async with FakeDiscord(dave_protocol_version=1) as fake:
        guild = fake.add_guild("Test")
        text, voice = guild.add_text_channel("general"), guild.add_voice_channel("Lounge")
        alice = fake.add_member(guild, "alice")
        with fake.patch_discord():              # Route.BASE and DEFAULT_GATEWAY
            client = discord.Client(intents=intents, connector=fake.connector())
            task = asyncio.create_task(client.start(fake.token))
            await client.wait_until_ready()
            ...
            await client.close()
            await task

`connector()` trusts the fake's self-signed certificate, which discord.py needs because it
always dials the voice gateway as `wss://` (`aiohttp.TCPConnector(ssl=False)` works too).
`patch_discord()` changes class attributes: one fake per process at a time.

Test-side API (see each class):
- world: `add_guild`, `add_member`, `add_user`; `FakeGuild.add_text_channel/add_voice_channel/
  add_role`; everything before the bot connects is in its GUILD_CREATE.
- events: `await user_joins_voice(guild, user, channel)` → `FakeVoiceUser`,
  `await user_leaves_voice(guild, user)` (for the bot: a server-side kick, close 4014),
  `await send_interaction(guild, channel, user, "cmd", {"opt": value}, subcommand=...)` →
  `InteractionHandle` (`await handle.response()`, `.next_reply()`, `.final_text()`),
  `await next_interaction_reply()`, `dispatch(event, data)`; `interactions.violations` lists
  what Discord would have rejected (double responses, late acknowledgements…).
- voice: `await bot_voice(guild)` → `BotVoiceSession` (`await next_frame()` → `ReceivedFrame`
  with the raw datagram, the transport plaintext and the DAVE-decrypted Opus; `next_opus()`),
  `FakeVoiceUser.send_opus/send_frame/send_raw/play/dave_encrypt`, `dave(channel)` →
  `DaveCoordinator` (`await wait_for_members({...})`, `downgrade()`, `upgrade()`,
  `preferred_committer`).
- audio helpers in `tests.fakes.discord.audio`: `load_libopus`, `encode_tone`, `decode_opus`,
  `dominant_frequency`.
"""

from .dave import DaveCoordinator
from .interactions import InteractionHandle, InteractionReply, ReplyKind
from .server import FakeDiscord
from .state import (
    ChannelType,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    FakeVoiceState,
    Permission,
)
from .voice_call import VoiceCall
from .voice_session import BotVoiceSession, ReceivedFrame
from .voice_user import FakeVoiceUser

__all__ = [
    "BotVoiceSession",
    "ChannelType",
    "DaveCoordinator",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "FakeVoiceState",
    "FakeVoiceUser",
    "InteractionHandle",
    "InteractionReply",
    "Permission",
    "ReceivedFrame",
    "ReplyKind",
    "VoiceCall",
]
