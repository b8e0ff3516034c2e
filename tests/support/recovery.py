"""How long audio takes to come back after a fault: two bridges in one room, one speaking a
1 kHz tone, the other's output watched frame by frame. Shared by the fault-injection tests
and `bench/recovery.py`.

A fault is confirmed before it is timed: the listener's output must fall silent first (so a
jitter buffer playing out old packets is not mistaken for recovery). The clock starts when
the SFU is back (restarted and answering) or the network is (the blackout rule removed),
and stops when 100 ms of the tone in a row reach the listener's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from media.bridge import Bridge, BridgeConfig
from media.peer import PeerConfig
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory
from media.sfu import LocalSFU
from tests.support.bridges import speaking
from tests.support.sfu_process import SfuProcess
from tests.support.signals import band_level_db

__all__ = ["FAULTS", "RecoveryResult", "measure_recovery"]

TONE_HZ = 1000.0
HEARD_DB = -45.0
HEARD_FRAMES = 5  # 100 ms in a row


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    fault: str
    back_after_s: float
    """From the SFU or network being back to the tone heard again."""
    recoveries: int
    """Peer recoveries of both bridges together."""


class _Listener:
    """Reads the bridge's output every 20 ms (as Discord's player would) and keeps, per
    frame, whether the tone is in it."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self._run_of_tone = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="recovery-listener")

    async def _run(self) -> None:
        async for frame in self._bridge.frames():
            heard = band_level_db(frame, TONE_HZ) > HEARD_DB
            self._run_of_tone = self._run_of_tone + 1 if heard else 0
            self._changed.set()

    async def until(self, predicate: Callable[[int], bool], within_s: float) -> float:
        started = time.monotonic()
        async with asyncio.timeout(within_s):
            while not predicate(self._run_of_tone):
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - started

    async def heard(self, within_s: float) -> float:
        return await self.until(lambda run: run >= HEARD_FRAMES, within_s)

    async def silent(self, within_s: float) -> None:
        await self.until(lambda run: run == 0, within_s)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


Fault = Callable[["_Room"], Awaitable[None]]
"""Breaks the room's SFU, waits until the listener went silent, restores it; returns when
the SFU or network is back (the clock starts then)."""


@dataclass(slots=True)
class _Room:
    sfu: SfuProcess | LocalSFU
    speaker: Bridge
    listener: Bridge
    output: _Listener


async def _restart(room: _Room, sig: signal.Signals) -> None:
    assert isinstance(room.sfu, SfuProcess)
    await room.sfu.stop(sig)
    await room.output.silent(10)
    await room.sfu.start()


async def _blackout(room: _Room, seconds: float) -> None:
    assert isinstance(room.sfu, SfuProcess)
    async with room.sfu.blackout():
        started = time.monotonic()
        await room.output.silent(10)
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))


async def _forget(room: _Room) -> None:
    assert isinstance(room.sfu, LocalSFU)
    registry = room.sfu.registry
    peer = room.listener.peer
    recoveries = peer.recoveries
    await registry.discard(registry.get(peer.session_id))
    # The rebuild can be quicker than the jitter buffer's concealment, so the output may
    # never fall silent: the fault is confirmed by the rebuild itself. The clock starts at
    # the fault (the SFU "returns" at once).
    inbound = peer.inbound(room.speaker.peer.session_id, "tone")
    async with asyncio.timeout(10):
        while peer.recoveries == recoveries:
            await asyncio.sleep(0.005)
        packets = inbound.stats().packets
        while inbound.stats().packets < packets + HEARD_FRAMES:  # fresh packets, not concealment
            await asyncio.sleep(0.005)


FAULTS: dict[str, Fault] = {
    "sigterm_restart": lambda room: _restart(room, signal.SIGTERM),
    "sigkill_restart": lambda room: _restart(room, signal.SIGKILL),
    "blackout_3s": lambda room: _blackout(room, 3.0),
    "blackout_35s": lambda room: _blackout(room, 35.0),
    "session_gone_410": _forget,
}


@contextlib.asynccontextmanager
async def _sfu_for(fault: str) -> AsyncIterator[SfuProcess | LocalSFU]:
    if fault == "session_gone_410":
        async with LocalSFU() as local:
            yield local
    else:
        async with SfuProcess(isolated=fault.startswith("blackout")) as process:
            yield process


async def measure_recovery(
    fault: str, *, peer: PeerConfig | None = None, within_s: float = 20.0
) -> RecoveryResult:
    directory = InMemoryDirectory()
    async with (
        _sfu_for(fault) as sfu,
        RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as client,
    ):
        config = peer or PeerConfig()
        speaker = Bridge("recovery", client, directory, BridgeConfig("a", "a", peer=config))
        listener = Bridge("recovery", client, directory, BridgeConfig("b", "b", peer=config))
        await speaker.start()
        await listener.start()
        output = _Listener(listener)
        try:
            async with speaking(speaker, "tone", TONE_HZ):
                await output.heard(15)
                faulted = time.monotonic()
                await FAULTS[fault](_Room(sfu, speaker, listener, output))
                back_after = await output.heard(within_s)
                if fault == "session_gone_410":
                    back_after = time.monotonic() - faulted
        finally:
            await output.close()
            await listener.stop()
            await speaker.stop()
        recoveries = speaker.peer.recoveries + listener.peer.recoveries
    return RecoveryResult(fault, back_after, recoveries)
