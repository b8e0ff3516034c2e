"""The discord.py / voice_recv internals `bot/voice/compat.py` relies on are still there.

Each check names the attribute and the workaround it serves, so a version bump that moves one
fails here, by name, instead of somewhere deep in a voice call. Instance attributes are found
where the library assigns them (its `__init__` source); classes and signatures directly.
A check that a worked-around bug still exists fails too once it is fixed upstream: then the
workaround can go.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import pytest
from discord.ext import voice_recv
from discord.ext.voice_recv.buffer import HeapJitterBuffer
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader, SpeakingTimer, UDPKeepAlive
from discord.ext.voice_recv.router import PacketRouter
from discord.ext.voice_recv.voice_client import VoiceRecvClient
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_client import VoiceClient
from discord.voice_state import SocketReader, VoiceConnectionState

from bot.voice import compat

pytestmark = pytest.mark.timeout(10)


def assigned_in(function: Callable[..., Any], attribute: str) -> bool:
    """`function` (e.g. a class's __init__) assigns `self.<attribute>`."""
    source = inspect.getsource(function)
    return re.search(rf"self\.{re.escape(attribute)}\s*(:[^=\n]+)?=[^=]", source) is not None


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_pinned_versions_are_installed():
    assert version("discord.py") == "2.7.1", "compat.py was checked against discord.py 2.7.1"
    assert version("discord-ext-voice-recv") == "0.5.2a179", (
        "compat.py was checked against discord-ext-voice-recv 0.5.2a179"
    )


@pytest.mark.parametrize(
    ("owner", "attribute", "used_for"),
    [
        (VoiceClient, "_connection", "dave_state, dead_voice_websocket, reap"),
        (VoiceClient, "_player", "player_thread (joined after stop_playing)"),
        (VoiceConnectionState, "dave_session", "dave_state"),
        (VoiceConnectionState, "dave_protocol_version", "dave_state"),
        (VoiceConnectionState, "_runner", "dead_voice_websocket, reap (workarounds 5, 6)"),
        (VoiceConnectionState, "_connector", "reap (workaround 6)"),
        (VoiceRecvClient, "_reader", "install_reader, remove_reader (workaround 3)"),
        (AudioReader, "keepalive", "ReceiveReader (workaround 1)"),
        (AudioReader, "packet_router", "ReceiveReader, join_reader"),
        (AudioReader, "event_router", "join_reader"),
        (AudioReader, "speaking_timer", "ReceiveReader (workaround 8)"),
        (PacketRouter, "decoders", "ReceiveReader's decoder factory (workaround 2)"),
        (PacketRouter, "_lock", "ReceiveReader's decoder factory (workaround 2)"),
        (PacketDecoder, "_buffer", "ReceiveReader's decoder factory (workaround 2)"),
    ],
    ids=lambda value: value if isinstance(value, str) else getattr(value, "__name__", None),
)
def test_instance_attributes_are_still_assigned(owner, attribute, used_for):
    assert assigned_in(owner.__init__, attribute), (
        f"{owner.__module__}.{owner.__name__}.__init__ no longer assigns self.{attribute} "
        f"(bot/voice/compat.py uses it for {used_for})"
    )


def test_functions_have_the_signatures_we_call():
    checks = [
        (VoiceRecvClient._get_id_from_ssrc, ["self", "ssrc"], "user_id_of_ssrc"),
        (VoiceRecvClient.stop_listening, ["self"], "remove_reader"),
        (PacketRouter.get_decoder, ["self", "ssrc"], "ReceiveReader replaces it per instance"),
        (PacketDecoder.__init__, ["self", "router", "ssrc"], "the decoder factory"),
        (AudioReader.__init__, ["self", "sink", "voice_client", "after"], "ReceiveReader"),
        (SpeakingTimer.notify, ["self", "ssrc"], "_NoSpeakingTimer stands in for it"),
    ]
    for function, expected, used_for in checks:
        assert parameters(function) == expected, (
            f"{function.__qualname__}{inspect.signature(function)} changed; "
            f"bot/voice/compat.py calls it as ({', '.join(expected)}) for {used_for}"
        )
    prefsize = inspect.signature(HeapJitterBuffer.__init__).parameters.get("prefsize")
    assert prefsize is not None and prefsize.kind is inspect.Parameter.KEYWORD_ONLY, (
        "HeapJitterBuffer(prefsize=...) is gone; compat's decoder factory passes prefsize=0"
    )


def test_voice_recv_reader_keeps_its_keepalive_behind_start_and_stop():
    start, stop = inspect.getsource(AudioReader.start), inspect.getsource(AudioReader._stop)
    assert "self.keepalive.start()" in start, "AudioReader.start no longer starts self.keepalive"
    assert "self.keepalive.stop()" in stop, "AudioReader._stop no longer stops self.keepalive"


def test_voice_recv_calls_only_what_the_speaking_timer_stand_in_offers():
    from discord.ext.voice_recv import reader, voice_client

    source = inspect.getsource(reader) + inspect.getsource(voice_client)
    called = set(re.findall(r"speaking_timer\.(\w+)", source))
    offered = {name for name in vars(compat._NoSpeakingTimer) if not name.startswith("_")}
    assert called and called <= offered, f"voice_recv calls speaking_timer.{called - offered}"


def test_the_worked_around_bugs_are_still_there():
    """When one of these fails, upstream fixed it: drop the workaround in compat.py."""
    assert UDPKeepAlive.delay == 5000 and "time.sleep(self.delay)" in inspect.getsource(
        UDPKeepAlive.run
    ), "UDPKeepAlive no longer sleeps `delay` seconds: workaround 1 may be unnecessary"
    default = inspect.signature(HeapJitterBuffer.__init__).parameters["prefsize"].default
    assert default == 1, f"HeapJitterBuffer's prefsize default is {default}: see workaround 2"
    assert "self.speaking_timer.notify(ssrc)" in inspect.getsource(AudioReader.callback), (
        "voice_recv no longer wakes its speaking timer per packet: workaround 8 may be unnecessary"
    )
    assert "AudioReader(sink, self" in inspect.getsource(VoiceRecvClient.listen), (
        "VoiceRecvClient.listen() now takes a reader? workaround 3 may be unnecessary"
    )
    handler = inspect.getsource(DiscordVoiceWebSocket.received_binary_message)
    proposals = handler[
        handler.index("process_proposals") - 200 : handler.index("process_proposals")
    ]
    assert "try:" not in proposals, (
        "discord.py now catches davey errors around process_proposals: see workaround 5"
    )
    assert "select.select([self.state.socket], [], [], 30)" in inspect.getsource(
        SocketReader._do_run
    ), "discord.py's SocketReader no longer waits 30 s on its socket: see workaround 7"


class _OpusSink(voice_recv.AudioSink):
    def wants_opus(self) -> bool:
        return True

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        pass

    def cleanup(self) -> None:
        pass


def test_receive_reader_has_no_keepalive_thread_and_prompt_decoders():
    """Built on voice_recv's real classes (no threads started): what ReceiveReader changes."""
    voice_client = SimpleNamespace(mode="aead_xchacha20_poly1305_rtpsize", secret_key=[0] * 32)
    reader = compat.ReceiveReader(_OpusSink(), voice_client, after=lambda error: None)
    assert not isinstance(reader.keepalive, UDPKeepAlive)
    reader.keepalive.start()  # a no-op, where voice_recv's would start a thread
    decoder = reader.packet_router.get_decoder(1234)
    assert reader.packet_router.decoders[1234] is decoder
    assert reader.packet_router.get_decoder(1234) is decoder
    buffer = decoder._buffer
    assert isinstance(buffer, HeapJitterBuffer) and buffer.prefsize == 0, (
        "PacketDecoder._buffer is not the prompt HeapJitterBuffer compat installs"
    )
